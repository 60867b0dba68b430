"""What a request's `response_format`, `tools` and `tool_choice` ask of a decoder: checked, turned into the
template's `tools`, a constraint for decoding (`votive.models.json_constraint`) and a parser of the answer.

Handlers reach it through a model (`model.structured()`), since they import no model code. Every problem with
the request raises `StructuredInputError` naming the field, which a handler answers with a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from votive.errors import InputError
from votive.models.json_constraint import JsonConstraint
from votive.text import tool_calls
from votive.text.json_schema import ANY, SchemaError, compile_schema

_JSON_SCHEMA_KEYS = {"name", "description", "schema", "strict"}
_FUNCTION_KEYS = {"name", "description", "parameters", "strict"}


class StructuredInputError(InputError):
    """A response_format, tools or tool_choice the model cannot honour; `param` is the field, `code` the reason."""

    def __init__(self, message: str, param: str, code: str):
        self.param, self.code = param, code
        super().__init__(message)


@dataclass
class ToolPlan:
    """One request's tools: what the template gets, how the answer is parsed, and what decoding must produce."""

    tools: list[dict]  # as the chat template gets them (OpenAI's function tools)
    format: tool_calls.ToolFormat
    names: set[str]
    choice: str  # "auto", "none", "required" or "named"
    constraint: Callable[..., JsonConstraint] | None = None  # forced calls: (budget) -> a fresh constraint

    def parse(self, text: str) -> tuple[str | None, list[dict]]:
        """(content or None, OpenAI tool_calls) of an answer; no calls with tool_choice "none"."""
        if self.choice == "none":
            return text, []
        content, calls = tool_calls.parse_calls(text, self.format, self.names)
        return (content or None) if calls else text, calls


class Structured:
    """Structured output and tool calls for one model's tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def response_format(self, value) -> Callable[[], JsonConstraint] | None:
        """A maker of constraints for `response_format` (None for text)."""
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
            raise StructuredInputError(f"'response_format' must be {{\"type\": \"text\" | \"json_object\" | "
                                       f"\"json_schema\"}}, found {_text(value)}", "response_format", "invalid_value")
        kind = value["type"]
        extra = set(value) - {"type"} - ({"json_schema"} if kind == "json_schema" else set())
        if extra:
            raise StructuredInputError(f"'response_format' of type {kind!r} takes no {sorted(extra)[0]!r}",
                                       "response_format", "invalid_value")
        if kind == "text":
            return None
        if kind == "json_object":
            node, key = compile_schema({"type": "object"}), "json_object"
        else:
            spec = value.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict) \
                    or set(spec) - _JSON_SCHEMA_KEYS:
                raise StructuredInputError(f"'response_format.json_schema' must be {{name, description?, schema, "
                                           f"strict?}}, found {_text(spec)}", "response_format", "invalid_value")
            schema = spec.get("schema", {})
            node = self._schema(schema, "response_format.json_schema.schema")
            key = "schema:" + json.dumps(schema, sort_keys=True)
        tokenizer = self.tokenizer
        return lambda budget=None: JsonConstraint.for_schema(tokenizer, node, key, budget=budget)

    def tools(self, tools, tool_choice) -> ToolPlan | None:
        """The plan for `tools` and `tool_choice` (None when there are no tools and no choice asks for one)."""
        if tools is None or tools == []:
            if tool_choice not in (None, "none", "auto"):
                raise StructuredInputError(f"'tool_choice' is {_text(tool_choice)} but no 'tools' are given",
                                           "tool_choice", "invalid_value")
            return None
        if not isinstance(tools, list):
            raise StructuredInputError(f"'tools' must be a list of function tools, found {_text(tools)}", "tools",
                                       "invalid_type")
        names = []
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict) \
                    or set(tool) - {"type", "function"}:
                raise StructuredInputError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{name, "
                                           f"description?, parameters?}}}}, found {_text(tool)}", "tools",
                                           "invalid_value")
            name = function.get("name")
            if not isinstance(name, str) or not name or set(function) - _FUNCTION_KEYS:
                raise StructuredInputError(f"tools[{i}].function must have a string 'name' and only "
                                           f"{sorted(_FUNCTION_KEYS)}, found {_text(function)}", "tools",
                                           "invalid_value")
            if name in names:
                raise StructuredInputError(f"tools[{i}]: the function name {name!r} is given twice", "tools",
                                           "invalid_value")
            self._schema(function.get("parameters", {}), f"tools[{i}].function.parameters", "tools")
            names.append(name)
        source = getattr(self.tokenizer, "chat_template_source", None)
        if not tool_calls.supports_tools(source):
            raise StructuredInputError("this model's chat template has no tool support (it never reads `tools`), so "
                                       "it cannot be given tools; leave 'tools' out", "tools", "tools_unsupported")
        fmt = tool_calls.format_for(source)
        choice, allowed = self._choice(tool_choice, names, tools)
        plan = ToolPlan(tools, fmt, set(names), choice)
        if choice in ("required", "named"):
            schema = tool_calls.call_schema(allowed, fmt)
            node = self._schema(schema, "tools", "tools")
            key = "tools:" + json.dumps([fmt.name, schema], sort_keys=True)
            start, end = fmt.start.encode(), fmt.end.encode()
            tokenizer = self.tokenizer
            plan.constraint = lambda budget=None: JsonConstraint.for_schema(tokenizer, node, key, start, end, budget)
        return plan

    @staticmethod
    def _choice(value, names: list[str], tools: list[dict]) -> tuple[str, list[dict]]:
        if value is None or value in ("auto", "none", "required"):
            return value or "auto", tools
        if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
            name = value["function"].get("name")
            if name not in names:
                raise StructuredInputError(f"'tool_choice' names the function {_text(name)}, which is not in 'tools' "
                                           f"({', '.join(names)})", "tool_choice", "unknown_tool")
            return "named", [t for t in tools if t["function"]["name"] == name]
        raise StructuredInputError(f"'tool_choice' must be \"auto\", \"none\", \"required\" or {{\"type\": "
                                   f"\"function\", \"function\": {{\"name\": ...}}}}, found {_text(value)}",
                                   "tool_choice", "invalid_value")

    @staticmethod
    def _schema(schema, where: str, param: str = "response_format"):
        try:
            return compile_schema(schema, where) if schema != {} else ANY
        except SchemaError as e:
            code = "unsupported_schema_feature" if e.feature else "invalid_schema"
            raise StructuredInputError(str(e), param, code) from None


def _text(value) -> str:
    return json.dumps(value)[:80]
