"""Tool calls as model families write them: one table row per format, the parser that turns a model's output
into OpenAI's `tool_calls`, and the JSON Schema of a call (which constrained decoding enforces for
`tool_choice: "required"` or a named function).

A format is picked by a marker in the chat template's source (the template shows the model how to call, so
it names its own syntax); a template that mentions `tools` but none of the markers gets the generic JSON
format (the whole answer is one {"name", "arguments"} object, or a list of them).

Example:
    >>> fmt = format_for("... <tool_call> ... tools ...")
    >>> parse_calls('<tool_call>\\n{"name": "f", "arguments": {"x": 1}}\\n</tool_call>', fmt, {"f"})
    ('', [{'name': 'f', 'arguments': '{"x": 1}'}])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolFormat:
    """How one family writes tool calls."""

    name: str
    marker: str | None  # text in the chat template that identifies the format (None: the generic fallback)
    start: str  # text before a call (or before the list of calls)
    end: str  # text after it ("" when the call ends the answer)
    arguments_key: str  # the call object's key for the arguments: "arguments" or "parameters"
    listed: bool  # the calls are one JSON list after `start` (else one object per start/end pair)
    families: str  # who writes it
    verified: str  # how votive checks it (see tests/test_tools.py)


FORMATS = (
    ToolFormat("hermes", "<tool_call>", "<tool_call>\n", "\n</tool_call>", "arguments", False,
               "Qwen 2.5, Qwen 3, Hermes 2 Pro / 3, SmolLM3",
               "parsed and forced, end to end with a Qwen-style template"),
    ToolFormat("mistral", "[TOOL_CALLS]", "[TOOL_CALLS]", "", "arguments", True,
               "Mistral 7B v0.3, Mistral Nemo (the JSON-list form)", "parsed from hand-written outputs"),
    ToolFormat("phi4-mini", "<|tool_call|>", "<|tool_call|>", "<|/tool_call|>", "arguments", True,
               "Phi-4-mini", "parsed from hand-written outputs"),
    ToolFormat("llama3", "<|python_tag|>", "", "", "parameters", False,
               "Llama 3.1 / 3.2 / 3.3 (JSON tool calls; a leading <|python_tag|> is dropped)",
               "parsed and forced with a Llama-style template"),
    ToolFormat("generic", None, "", "", "arguments", False, "any other template that takes `tools`",
               "parsed and forced"),
)
GENERIC = FORMATS[-1]


def supports_tools(template_source: str | None) -> bool:
    """Whether a chat template reads `tools` at all (transformers passes them as the `tools` variable)."""
    return bool(template_source) and re.search(r"\btools\b", template_source) is not None


def format_for(template_source: str) -> ToolFormat:
    """The format whose marker the template names; the generic one when none does."""
    for fmt in FORMATS:
        if fmt.marker is not None and fmt.marker in template_source:
            return fmt
    return GENERIC


def call_schema(tools: list[dict], fmt: ToolFormat) -> dict:
    """The JSON Schema of what a forced answer is (after `fmt.start`, before `fmt.end`): one call of one of
    `tools` (OpenAI function tools, checked) with arguments valid for its `parameters`; a one-item list for
    listed formats."""
    calls = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        calls.append({"type": "object", "properties": {"name": {"const": function["name"]},
                                                       fmt.arguments_key: parameters},
                      "required": ["name", fmt.arguments_key], "additionalProperties": False})
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {"type": "array", "items": call, "minItems": 1, "maxItems": 1} if fmt.listed else call


def parse_calls(text: str, fmt: ToolFormat, names: set[str]) -> tuple[str, list[dict]]:
    """(the text outside the calls, [{"name", "arguments": JSON text}]) of a model's answer. A call that is not
    JSON, or names no tool in `names`, is left in the text: the answer is then content, as the model wrote it."""
    if fmt.listed or not fmt.start:
        body = text.strip()
        if fmt.start and body.startswith(fmt.start.strip()):
            body = body[len(fmt.start.strip()):]
        elif fmt.name == "llama3" and body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):]
        elif fmt.start:
            return text, []
        if fmt.end and body.rstrip().endswith(fmt.end):
            body = body.rstrip()[: -len(fmt.end)]
        calls = _calls(_json(body), fmt, names)
        return ("", calls) if calls else (text, [])
    pattern = re.compile(re.escape(fmt.start.strip()) + r"(.*?)(?:" + re.escape(fmt.end.strip()) + r"|$)", re.S)
    calls, kept, last = [], [], 0
    for match in pattern.finditer(text):
        found = _calls(_json(match.group(1)), fmt, names)
        if not found:
            continue
        calls.extend(found)
        kept.append(text[last:match.start()])
        last = match.end()
    kept.append(text[last:])
    return ("".join(kept).strip(), calls) if calls else (text, [])


def _json(text: str):
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def _calls(value, fmt: ToolFormat, names: set[str]) -> list[dict]:
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return []
        arguments = item.get(fmt.arguments_key, item.get("arguments", item.get("parameters", {})))
        if isinstance(arguments, str):  # some models write the arguments as JSON text already
            arguments = _json(arguments)
        if not isinstance(arguments, dict):
            return []
        calls.append({"name": item["name"], "arguments": json.dumps(arguments, ensure_ascii=False)})
    return calls
