"""Requests to the generation endpoints, checked: the OpenAI fields each route takes, and the checks that turn a
JSON body into the prompt or messages and the `Options` of a generation, or an HttpError 400 naming the field.

`votive.handlers.generation` serves the routes; its module docstring lists the decisions these checks carry out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from votive.handlers import events
from votive.handlers.http_errors import HttpError

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for completions' `logprobs`
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat's `top_logprobs`
DEFAULT_MAX_N = 8  # VOTIVE_MAX_N's default: choices per request
MAX_LOGIT_BIAS = 100  # OpenAI's bound on each bias

# Sampling fields, passed to the decoder under these names, with the JSON type each must have.
SAMPLING_FIELDS = {
    "temperature": "number",
    "top_p": "number",
    "top_k": "integer",
    "min_p": "number",
    "repetition_penalty": "number",
    "seed": "integer",
    "presence_penalty": "number",
    "frequency_penalty": "number",
}
# OpenAI fields for features this endpoint does not have: (the values that turn them off, what is missing).
# null is always accepted.
OFF_ONLY = {
    "best_of": ((1,), "returns one choice per request"),
    "echo": ((False,), "does not echo the prompt"),
    "suffix": (("",), "does not insert text before a suffix"),
}
_COMMON_FIELDS = {"model", "user", "max_tokens", "stop", "stream", "stream_options", *SAMPLING_FIELDS,
                  "n", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
COMPLETION_FIELDS = frozenset(_COMMON_FIELDS | {"prompt", "best_of", "echo", "suffix"})
CHAT_FIELDS = frozenset(_COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "tools",
                                          "tool_choice", "response_format"})
# Chat roles as the request names them -> as the chat template gets them.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

@dataclass
class Options:
    """What a request asks of the generation, checked."""

    max_tokens: int
    stop: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    n: int = 1  # choices
    logprobs: int | None = None  # None: no log probabilities; else how many alternatives each token lists


def parse_options(body: dict, request: events.Request, n_ctx: int, default_max_tokens: int, *, chat: bool = False,
                  max_n: int = DEFAULT_MAX_N) -> Options:
    """The generation settings a request body asks for (`chat`: a chat request's), or HttpError 400 naming the
    bad field."""
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = typed(body, name, "integer")
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif not 1 <= max_tokens <= n_ctx:
        raise HttpError(400, f"'{name}' is {max_tokens}; it must be from 1 to {n_ctx}, the model's context "
                             f"length", param=name, code="invalid_value")
    sampling = {}
    for key, kind in SAMPLING_FIELDS.items():
        if (value := typed(body, key, kind)) is not None:
            sampling[key] = value
    sampling.setdefault("temperature", 1.0)  # OpenAI's default; the decoder's own is greedy
    if sampling.get("seed", 0) < 0:
        raise HttpError(400, f"'seed' is {sampling['seed']}; it must be 0 or more", param="seed",
                        code="invalid_value")
    stream = typed(body, "stream", "boolean") or False
    if stream and not request.from_url:
        raise HttpError(400, "'stream' needs a function URL (invoke mode RESPONSE_STREAM); a direct invoke is "
                             "answered whole: leave 'stream' out", param="stream", code="unsupported_value")
    if (bias := _logit_bias(body.get("logit_bias"))) is not None:
        sampling["logit_bias"] = bias
    n = typed(body, "n", "integer")
    if n is not None and not 1 <= n <= max_n:
        raise HttpError(400, f"'n' is {n}; this endpoint returns 1 to {max_n} choices per request (VOTIVE_MAX_N)",
                        param="n", code="invalid_value")
    return Options(max_tokens, stop_strings(body.get("stop")), sampling, stream, _include_usage(body, stream),
                   n or 1, _chat_logprobs(body) if chat else _completion_logprobs(body))


def _completion_logprobs(body: dict) -> int | None:
    """Completions' `logprobs`: an integer, the alternatives listed per token (0: the chosen token's only)."""
    value = typed(body, "logprobs", "integer")
    if value is not None and not 0 <= value <= MAX_COMPLETION_LOGPROBS:
        raise HttpError(400, f"'logprobs' is {value}; it must be from 0 to {MAX_COMPLETION_LOGPROBS}",
                        param="logprobs", code="invalid_value")
    return value


def _chat_logprobs(body: dict) -> int | None:
    """Chat's `logprobs: true` and `top_logprobs` (0 to 20 alternatives, only with logprobs)."""
    on = typed(body, "logprobs", "boolean")
    top = typed(body, "top_logprobs", "integer")
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise HttpError(400, f"'top_logprobs' is {top}; it must be from 0 to {MAX_TOP_LOGPROBS}",
                        param="top_logprobs", code="invalid_value")
    if top is not None and not on:
        raise HttpError(400, "'top_logprobs' needs \"logprobs\": true", param="top_logprobs",
                        code="invalid_value")
    return (top or 0) if on else None


def _logit_bias(value) -> dict[int, float] | None:
    """OpenAI's logit_bias, {"token id": bias}, as {id: bias}; the ids are checked against the vocabulary by the
    decoder."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise HttpError(400, f"'logit_bias' must be an object mapping token ids to biases, found a JSON "
                             f"{events.json_type(value)}", param="logit_bias", code="invalid_type")
    bias = {}
    for key, b in value.items():
        if not (key.isascii() and key.isdigit()):
            raise HttpError(400, f"'logit_bias' has the key {json_text(key)}; keys are token ids, such as \"50256\"",
                            param="logit_bias", code="invalid_value")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not -MAX_LOGIT_BIAS <= b <= MAX_LOGIT_BIAS:
            raise HttpError(400, f"'logit_bias' gives token {key} the bias {json_text(b)}; a bias is a number from "
                                 f"-{MAX_LOGIT_BIAS} to {MAX_LOGIT_BIAS}", param="logit_bias", code="invalid_value")
        bias[int(key)] = float(b)
    return bias


def checked_fields(request: events.Request, known: frozenset[str]) -> dict:
    """The request body as a dict, refusing unknown fields and fields for features we do not have."""
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, f"the request body must be a JSON object, found a JSON {events.json_type(body)}",
                        code="invalid_type")
    unknown = sorted(name for name in body if name not in known)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise HttpError(400, f"unknown parameter{'s' if len(unknown) > 1 else ''} {names} for {request.method} "
                             f"{request.path}; it takes {', '.join(sorted(known))}", param=unknown[0],
                        code="unknown_parameter")
    for name, (off, missing) in OFF_ONLY.items():
        value = body.get(name)
        if name in known and value is not None and not any(value == v and type(value) is type(v) for v in off):
            raise HttpError(400, f"'{name}' is {json_text(value)}, but this endpoint {missing}; leave it out or "
                                 f"send {json_text(off[0])}", param=name, code="unsupported_parameter")
    return body


def typed(body: dict, name: str, kind: str):
    """body[name] when it is of JSON type `kind` ("integer", "number", "boolean"); None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    ok = {"integer": isinstance(value, int), "number": isinstance(value, (int, float)),
          "boolean": isinstance(value, bool)}[kind]
    if isinstance(value, bool) and kind != "boolean":
        ok = False
    if not ok:
        raise HttpError(400, f"'{name}' must be a{'n' if kind[0] == 'i' else ''} {kind}, found a JSON "
                             f"{events.json_type(value)}", param=name, code="invalid_type")
    return value


def prompt_text(body: dict) -> str:
    value = body.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        return value
    if value is None:
        raise HttpError(400, "'prompt' is required: a string", param="prompt", code="missing_prompt")
    if isinstance(value, list) and value and all(isinstance(v, int) or isinstance(v, list) for v in value):
        raise HttpError(400, "'prompt' holds token ids; this endpoint takes text: send a string", param="prompt",
                        code="unsupported_prompt")
    if isinstance(value, list) and len(value) != 1:
        raise HttpError(400, f"'prompt' is a list of {len(value)} items; send one string (one prompt per request)",
                        param="prompt", code="invalid_prompt")
    raise HttpError(400, f"'prompt' must be a string, found a JSON {events.json_type(value)}", param="prompt",
                    code="invalid_type")


def chat_messages(value) -> list[dict]:
    """OpenAI chat messages -> [{role, content: str}] for the chat template, or 400 saying which and why."""
    if value is None:
        raise HttpError(400, "'messages' is required: a list of {role, content} objects", param="messages",
                        code="missing_messages")
    if not isinstance(value, list):
        raise HttpError(400, f"'messages' must be a list of {{role, content}} objects, found a JSON "
                             f"{events.json_type(value)}", param="messages", code="invalid_type")
    if not value:
        raise HttpError(400, "'messages' is empty; send at least one message", param="messages",
                        code="empty_messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise HttpError(400, f"messages[{i}] is a JSON {events.json_type(message)}; expected an object with "
                                 f"'role' and 'content'", param="messages", code="invalid_type")
        role = message.get("role")
        if role == "tool" or message.get("tool_calls"):  # tool results and calls: votive.handlers.generation_tools
            from votive.handlers.generation_tools import tool_message

            out.append(tool_message(message, i))
            continue
        if role not in ROLES:
            raise HttpError(400, f"messages[{i}].role is {json_text(role)}; expected 'system', 'user' or "
                                 f"'assistant' (or 'developer')", param="messages", code="invalid_role")
        out.append({"role": ROLES[role], "content": _content(message.get("content"), i)})
    return out


def _content(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise HttpError(400, f"messages[{i}].content must be a string or a list of text parts, found a JSON "
                             f"{events.json_type(content)}", param="messages", code="invalid_type")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            found = f"of type {json_text(kind)}" if kind not in (None, "text") else "not a {type: 'text', text} part"
            raise HttpError(400, f"messages[{i}].content[{j}] is {found}; this model reads text only",
                            param="messages", code="unsupported_content")
        texts.append(part["text"])
    return "\n".join(texts)


def stop_strings(value) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise HttpError(400, f"'stop' must be a string or a list of strings, found {json_text(value)}",
                        param="stop", code="invalid_type")
    if len(stops) > MAX_STOP_STRINGS:
        raise HttpError(400, f"'stop' has {len(stops)} strings; send at most {MAX_STOP_STRINGS}", param="stop",
                        code="too_many_stops")
    return [s for s in stops if s]


def _include_usage(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise HttpError(400, "'stream_options' is only allowed with \"stream\": true", param="stream_options",
                        code="invalid_value")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise HttpError(400, f"'stream_options' must be {{\"include_usage\": true|false}}, found "
                             f"{json_text(options)}", param="stream_options", code="invalid_value")
    return bool(typed(options, "include_usage", "boolean"))


def json_text(value) -> str:
    return json.dumps(value)[:80]
