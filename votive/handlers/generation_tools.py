"""The chat endpoint's tools (`tools`, `tool_choice`, tool messages, `tool_calls` answers) and enforced JSON
(`response_format`), on top of what the model offers through `model.structured()` (votive.models.structured).

- `tools` go to the chat template as transformers passes them (`tools=`); role "tool" messages and assistant
  messages with `tool_calls` are passed on, with each call's `arguments` parsed into an object as templates
  expect. A template that never reads `tools` makes a request with tools a 400.
- `tool_choice` "auto": the answer is parsed into `message.tool_calls` when the model wrote calls in its family's
  format (votive.text.tool_calls), with finish_reason "tool_calls". "required" or a named function: decoding is
  constrained to one call of an allowed tool with arguments valid for its `parameters`. "none": no parsing.
- `response_format` json_object / json_schema: decoding is constrained to a JSON object / a document valid for
  the schema; a schema feature votive does not enforce is a 400 naming it.
- Streamed with tools, text is sent as it comes until it may be a call (the format's start marker, or JSON
  opening an answer in formats without a marker); the rest is held to the end and sent as OpenAI does: for each
  call a delta with its id, type and name, then one with its arguments (or as content if it was no call).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Callable

from votive.errors import InputError
from votive.handlers import events
from votive.handlers.http_errors import HttpError


@dataclass
class ChatPlan:
    """What a chat request asks beyond text: template variables, a constraint maker and a tool plan."""

    template_extra: dict  # {"tools": [...]} when tools are given
    constraint: Callable | None = None  # makes one constraint per generation
    tools: object = None  # votive.models.structured.ToolPlan, or None

    def wrap(self, generations: list, max_tokens: int, n_ctx: int) -> list:
        """Each generation constrained (closing its document within its token budget), and wrapped to answer
        with tool calls when tools may be called."""
        if self.constraint is not None:
            for generation in generations:
                generation.constraint = self.constraint(min(max_tokens, n_ctx - generation.prompt_tokens))
        if self.tools is None or self.tools.choice == "none":
            return generations
        return [ToolCallGeneration(g, self.tools) for g in generations]


def chat_plan(model, body: dict) -> ChatPlan:
    """The plan for a chat request body, or HttpError 400 naming the field at fault."""
    tools, choice, response_format = body.get("tools"), body.get("tool_choice"), body.get("response_format")
    if tools in (None, []) and choice in (None, "none", "auto") and response_format in (None, {"type": "text"}):
        return ChatPlan({})
    structured = getattr(model, "structured", None)
    if structured is None:
        raise HttpError(400, f"{model.model_id} cannot constrain its output (tools, response_format)",
                        param="tools" if tools else "response_format", code="unsupported_parameter")
    helper = structured()
    try:
        plan = helper.tools(tools, choice)
        constraint = helper.response_format(response_format)
    except InputError as e:
        raise HttpError(400, str(e), param=getattr(e, "param", None), code=getattr(e, "code", None)) from None
    if plan is not None and plan.constraint is not None:
        if constraint is not None:
            raise HttpError(400, "'response_format' and a forced 'tool_choice' both constrain the answer; send one",
                            param="response_format", code="invalid_value")
        constraint = plan.constraint
    return ChatPlan({"tools": plan.tools} if plan is not None else {}, constraint, plan)


def tool_message(message: dict, i: int) -> dict:
    """A role "tool" message or an assistant message with tool_calls, checked, as the chat template gets it."""
    role = message.get("role")
    content = message.get("content")
    if role == "tool":
        if not isinstance(content, str):
            raise HttpError(400, f"messages[{i}] (role tool) needs a string 'content', found a JSON "
                                 f"{events.json_type(content)}", param="messages", code="invalid_type")
        out = {"role": "tool", "content": content}
        for key in ("tool_call_id", "name"):
            if isinstance(message.get(key), str):
                out[key] = message[key]
        return out
    if role != "assistant" or not isinstance(message.get("tool_calls"), list):
        raise HttpError(400, f"messages[{i}]: only assistant messages carry a list of 'tool_calls'",
                        param="messages", code="invalid_role")
    calls = []
    for j, call in enumerate(message["tool_calls"]):
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = None
        if not isinstance(function.get("name") if function else None, str) or not isinstance(parsed, dict):
            raise HttpError(400, f"messages[{i}].tool_calls[{j}] must be {{id, type: 'function', function: {{name, "
                                 f"arguments: a JSON object as text}}}}", param="messages", code="invalid_tool_call")
        calls.append({"id": call.get("id", ""), "type": "function",
                      "function": {"name": function["name"], "arguments": parsed}})
    return {"role": "assistant", "content": content if isinstance(content, str) else "", "tool_calls": calls}


class ToolCallGeneration:
    """A generation whose answer may be tool calls: iterated, it yields the content as one piece, or one delta
    (a dict) per call part; `message()` is the whole answer's message. Anything else is the generation's."""

    def __init__(self, generation, plan):
        self._generation = generation
        self._plan = plan
        self._answer = None  # (content, calls) once the generation is done

    def __getattr__(self, name):
        return getattr(self._generation, name)

    def _done(self):
        if self._answer is None:
            content, calls = self._plan.parse(self._generation.text())
            calls = [{"id": "call_" + secrets.token_hex(12), "type": "function",
                      "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
            self._answer = (content, calls)
        return self._answer

    @property
    def finish_reason(self):
        if self._answer is not None and self._answer[1]:
            return "tool_calls"
        return self._generation.finish_reason

    def message(self) -> dict:
        content, calls = self._done()
        message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return message

    def __iter__(self):
        """Text is streamed as it comes until it may be a call: from the format's start marker on (held back
        while the text ends with a beginning of it), or, for formats without one, when the answer opens with
        JSON. What follows is held until the end and sent as calls, or as content if it is none."""
        marker = self._plan.format.start.strip()
        sent, held, holding = [], "", False
        for piece in self._generation:
            held += piece
            if holding:
                continue
            if marker:
                at = held.find(marker)
                cut = at if at >= 0 else len(held) - _partial_suffix(held, marker)
                holding = at >= 0
            else:  # the whole answer is the call, or it is text
                start = held.lstrip()
                if not start or any(t.startswith(start[:len(t)]) for t in ("{", "[", "<|python_tag|>")):
                    holding = bool(start)
                    continue
                cut, marker = len(held), "\0"  # text: streamed from here on (no call can follow)
            if cut:
                sent.append(held[:cut])
                yield held[:cut]
                held = held[cut:]
        content, calls = self._plan.parse("".join(sent) + held)
        calls = [{"id": "call_" + secrets.token_hex(12), "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        self._answer = (content, calls)
        if not calls:
            if held:
                yield held
            return
        for index, call in enumerate(calls):
            function = call["function"]
            yield {"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": function["name"], "arguments": ""}}]}
            yield {"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]}

    def close(self) -> None:
        self._generation.close()


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that begins `marker` (held back: it may become the marker)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def answer_message(generation) -> dict:
    """The assistant message of a finished (or to be finished) generation."""
    if isinstance(generation, ToolCallGeneration):
        return generation.message()
    return {"role": "assistant", "content": generation.text()}
