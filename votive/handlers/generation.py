"""Lambda handler: a decoder (GGUF, or a Hugging Face ...ForCausalLM folder) behind OpenAI's completions and chat
completions APIs, streamed or whole.

Set the function's handler to `votive.handlers.generation.handler`. To stream, run it under votive's runtime
(`python -m votive.handlers.stream_runtime votive.handlers.generation.handler` as the image's entry point) and
give it a function URL in RESPONSE_STREAM invoke mode; `votive serve MODEL.gguf` does the same locally.

Routes:
    POST /v1/completions        OpenAI's legacy completions: a prompt in, its continuation out (also /completions)
    POST /v1/chat/completions   OpenAI's chat: messages in, rendered with the model's own chat template
                                (also /chat/completions)
    GET  /v1/models             the one model served
    GET  /health                the model: id, kind, context length, backend

With `"stream": true` the answer is Server-Sent Events, one per text piece as tokens are produced (a piece is
a token's text, except that a UTF-8 character split over tokens, or a possible start of a stop string, waits
for the next): `text_completion` objects for completions; `chat.completion.chunk` objects for chat, the first
carrying `delta: {role: "assistant"}`; then a chunk with the finish_reason, with `stream_options:
{"include_usage": true}` a chunk with the usage and no choices, and `data: [DONE]`. If the model fails
mid-stream, the last event is `data: {"error": {...}}` (the openai client raises it) and the trace is logged.
A client that disconnects closes the stream, which closes the generation: no token is computed after it.

A direct invoke is answered whole: `{"messages": [...]}` goes to chat, `{"prompt": "..."}` to completions,
`{"path": ..., "body": ...}` anywhere (see `votive.handlers.events`); `"stream": true` is refused there.

Configuration, read once at init from the environment:
    VOTIVE_MODEL       the model, as `votive.load` takes it (a .gguf file, hf:org/name/file.gguf, an alias such
                       as smollm2); required
    VOTIVE_N_CTX       positions a generation may use, prompt included (default: `votive.load`'s, 4096 or the
                       model's training context if smaller)
    VOTIVE_MAX_TOKENS  max_tokens for requests that send none (default 256)
    VOTIVE_BACKEND     numpy (default) or cupy, read by `votive.load`

Decisions (OpenAI's behaviour where it costs nothing, a 400 that says why where we cannot honour a field):
- Every field OpenAI defines for these endpoints is known. Fields for features we do not have (n, best_of,
  echo, suffix, logprobs, top_logprobs, presence/frequency_penalty, logit_bias, tools, tool_choice,
  response_format) are accepted only at the value that turns them off. Any other field is refused by name:
  a misspelt sampling parameter must not be ignored silently. `model` and `user` are accepted and ignored.
- llama.cpp's sampling fields are accepted too: top_k, min_p, repetition_penalty (and seed, as OpenAI's).
  temperature defaults to 1 and top_p to 1, as OpenAI's do; temperature 0 is greedy.
- `max_tokens` (or chat's `max_completion_tokens`) is 1 to the context length. A prompt that leaves no room in
  the context is refused (code context_length_exceeded); one that leaves less than max_tokens ends at the
  context's end with finish_reason "length".
- `prompt` is a string or a list of one string; token-id prompts are refused. `stop` is a string or up to 4.
- Chat `content` is a string or a list of text parts (joined with newlines); other parts (images, audio),
  tool messages and tool calls are refused. Role "developer" is read as "system". Whatever the chat template
  itself refuses (roles out of order, for Gemma) is a 400 with the template's words.
- `usage` counts the prompt tokens as the model saw them (BOS and the chat template's tokens included).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from votive.errors import InputError, ModelConfigError, VotiveFault
from votive.handlers import events, settings
from votive.handlers.http_errors import HttpError
from votive.protocol.streaming import SSE_DONE, SSE_HEADERS, StreamingResponse, sse_event

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

log = logging.getLogger("votive")

DEFAULT_MAX_TOKENS = 256  # when a request sends no max_tokens: bounded, so no request runs on unnoticed
MAX_STOP_STRINGS = 4  # OpenAI's limit

# Sampling fields, passed to the decoder under these names, with the JSON type each must have.
SAMPLING_FIELDS = {
    "temperature": "number",
    "top_p": "number",
    "top_k": "integer",
    "min_p": "number",
    "repetition_penalty": "number",
    "seed": "integer",
}
# OpenAI fields for features this endpoint does not have: (the values that turn them off, what is missing).
# null is always accepted.
OFF_ONLY = {
    "n": ((1,), "returns one choice per request"),
    "best_of": ((1,), "returns one choice per request"),
    "echo": ((False,), "does not echo the prompt"),
    "suffix": (("",), "does not insert text before a suffix"),
    "logprobs": ((False, 0), "does not return log probabilities"),
    "top_logprobs": ((0,), "does not return log probabilities"),
    "presence_penalty": ((0, 0.0), "has no presence penalty; use repetition_penalty"),
    "frequency_penalty": ((0, 0.0), "has no frequency penalty; use repetition_penalty"),
    "logit_bias": (({},), "does not bias tokens"),
    "tools": (([],), "has no tool calling"),
    "tool_choice": (("none",), "has no tool calling"),
    "response_format": (({"type": "text"},), "has no structured output"),
}
_COMMON_FIELDS = {"model", "user", "max_tokens", "stop", "stream", "stream_options", *SAMPLING_FIELDS,
                  "n", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
COMPLETION_FIELDS = frozenset(_COMMON_FIELDS | {"prompt", "best_of", "echo", "suffix"})
CHAT_FIELDS = frozenset(_COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "tools",
                                          "tool_choice", "response_format"})
# Chat roles as the request names them -> as the chat template gets them.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Settings:
    """The handler's configuration, as the VOTIVE_* environment variables give it."""

    model: str | ResolvedSource  # VOTIVE_MODEL: the source votive.load resolves (or one resolved already)
    n_ctx: int | None = None  # VOTIVE_N_CTX: None leaves it to votive.load
    max_tokens: int = DEFAULT_MAX_TOKENS  # VOTIVE_MAX_TOKENS: the default for requests without one

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: ResolvedSource | None = None) -> "Settings":
        """Read and check the settings (`source`, when given, is the model instead of VOTIVE_MODEL). Raises
        VotiveFault (Votive.ConfigError) naming the bad variable."""
        model = settings.required_model(environ, "a decoder: a .gguf file, hf:org/name/file.gguf, a Hugging "
                                                 "Face ...ForCausalLM folder or an alias, e.g. VOTIVE_MODEL=smollm2", source)
        return cls(model, settings.positive_int(environ, "VOTIVE_N_CTX"),
                   settings.positive_int(environ, "VOTIVE_MAX_TOKENS", DEFAULT_MAX_TOKENS))


@dataclass
class Options:
    """What a request asks of the generation, checked."""

    max_tokens: int
    stop: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage


class GenerationAPI:
    """The routes of a generation endpoint around one loaded decoder.

    Args:
        model: a decoder as `votive.load` returns it for a GGUF file: `.start(prompt_or_ids, max_tokens=...,
            stop=..., **sampling) -> Generation`, `.tokenize(text)`, `.tokenizer.encode_chat(messages)`,
            `.model_id`, `.kind`, `.n_ctx`, `.backend`.
        default_max_tokens: max_tokens for a request that sends none (capped at the context length).
        clock: epoch seconds, for `created`.
    """

    def __init__(self, model, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, clock: Callable[[], float] = time.time):
        self.model = model
        self.default_max_tokens = default_max_tokens
        self.clock = clock
        self.created = int(clock())

    def routes(self, hand_over: Callable[[StreamingResponse], None]) -> events.Routes:
        """The routes; a streamed answer is passed to `hand_over`, since `events.serve` answers JSON only."""

        def completions(request: events.Request):
            return self.completions(request, hand_over)

        def chat(request: events.Request):
            return self.chat_completions(request, hand_over)

        return {"/v1/completions": {"POST": completions}, "/completions": {"POST": completions},
                "/v1/chat/completions": {"POST": chat}, "/chat/completions": {"POST": chat},
                "/v1/models": {"GET": self.models}, "/health": {"GET": self.health}}

    # --- routes

    def completions(self, request: events.Request, hand_over: Callable[[StreamingResponse], None]):
        """POST /v1/completions."""
        body = _checked_fields(request, COMPLETION_FIELDS)
        prompt = _prompt(body)
        options = self.options(body, request)
        try:
            ids = self.model.tokenize(prompt)
        except InputError as e:  # text the tokenizer cannot take (a lone surrogate)
            raise HttpError(400, f"'prompt': {e}", param="prompt", code="invalid_text") from None
        generation = self._start(self._fitted(ids, "prompt"), options, "prompt")
        base = self._base("cmpl-", "text_completion")

        def choice(text: str | None, finish_reason: str | None) -> dict:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

        if options.stream:
            return self._streamed(generation, base, choice, None, options, hand_over)
        text = generation.text()
        return {**base, "choices": [choice(text, generation.finish_reason)], "usage": _usage(generation)}

    def chat_completions(self, request: events.Request, hand_over: Callable[[StreamingResponse], None]):
        """POST /v1/chat/completions."""
        body = _checked_fields(request, CHAT_FIELDS)
        messages = _messages(body.get("messages"))
        options = self.options(body, request)
        try:
            ids = self.model.tokenizer.encode_chat(messages, add_generation_prompt=True)
        except InputError as e:  # ChatTemplateError: the template refused or failed on these messages
            raise HttpError(400, str(e), param="messages", code="invalid_messages") from None
        except ModelConfigError as e:
            raise HttpError(400, f"{self.model.model_id} has no chat template, so it cannot chat; send your own "
                                 f"prompt to /v1/completions ({e})", param="messages",
                            code="no_chat_template") from None
        generation = self._start(self._fitted(ids, "messages"), options, "messages")
        base = self._base("chatcmpl-", "chat.completion")

        if options.stream:
            def choice(text: str | None, finish_reason: str | None) -> dict:
                delta = {} if text is None else {"content": text}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}
            chunk_base = {**base, "object": "chat.completion.chunk"}
            return self._streamed(generation, chunk_base, choice, first, options, hand_over)
        text = generation.text()
        message = {"role": "assistant", "content": text}
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": generation.finish_reason}]
        return {**base, "choices": choices, "usage": _usage(generation)}

    def models(self, request: events.Request) -> dict:
        """GET /v1/models: the one model, as OpenAI lists models."""
        entry = {"id": self.model.model_id, "object": "model", "created": self.created, "owned_by": "votive"}
        return {"object": "list", "data": [entry]}

    def health(self, request: events.Request) -> dict:
        """GET /health: what is served and with which limits."""
        from votive import __version__

        m = self.model
        return {"status": "ok", "model": m.model_id, "kind": m.kind, "n_ctx": m.n_ctx, "backend": m.backend,
                "default_max_tokens": self._default_max_tokens(), "votive": __version__}

    # --- request checks

    def options(self, body: dict, request: events.Request) -> Options:
        """The generation settings a request body asks for, or HttpError 400 naming the bad field."""
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _typed(body, name, "integer")
        n_ctx = self.model.n_ctx
        if max_tokens is None:
            max_tokens = self._default_max_tokens()
        elif not 1 <= max_tokens <= n_ctx:
            raise HttpError(400, f"'{name}' is {max_tokens}; it must be from 1 to {n_ctx}, the model's context "
                                 f"length", param=name, code="invalid_value")
        sampling = {}
        for key, kind in SAMPLING_FIELDS.items():
            if (value := _typed(body, key, kind)) is not None:
                sampling[key] = value
        sampling.setdefault("temperature", 1.0)  # OpenAI's default; the decoder's own is greedy
        if sampling.get("seed", 0) < 0:
            raise HttpError(400, f"'seed' is {sampling['seed']}; it must be 0 or more", param="seed",
                            code="invalid_value")
        stream = _typed(body, "stream", "boolean") or False
        if stream and not request.from_url:
            raise HttpError(400, "'stream' needs a function URL (invoke mode RESPONSE_STREAM); a direct invoke is "
                                 "answered whole: leave 'stream' out", param="stream", code="unsupported_value")
        return Options(max_tokens, _stop(body.get("stop")), sampling, stream, _include_usage(body, stream))

    def _default_max_tokens(self) -> int:
        return min(self.default_max_tokens, self.model.n_ctx)

    def _fitted(self, ids: list[int], param: str) -> list[int]:
        """The prompt's token ids, or 400 when they leave the context no room for a single new token."""
        n_ctx = self.model.n_ctx
        if len(ids) >= n_ctx:
            what = "prompt is" if param == "prompt" else "messages, as the chat template renders them, are"
            raise HttpError(400, f"the {what} {len(ids)} tokens, but the model's context holds {n_ctx} "
                                 f"(prompt and completion together); shorten it", param=param,
                            code="context_length_exceeded")
        return ids

    def _start(self, ids: list[int], options: Options, param: str):
        try:
            return self.model.start(ids, max_tokens=options.max_tokens, stop=options.stop, **options.sampling)
        except InputError as e:  # the decoder's own checks (sampling ranges, prompt length)
            message = str(e)
            named = next((name for name in (*SAMPLING_FIELDS, "max_tokens") if message.startswith(name)), param)
            raise HttpError(400, message, param=named, code="invalid_value") from None

    # --- answers

    def _base(self, id_prefix: str, obj: str) -> dict:
        return {"id": id_prefix + secrets.token_hex(12), "object": obj, "created": int(self.clock()),
                "model": self.model.model_id}

    def _streamed(self, generation, base: dict, choice: Callable, first: dict | None, options: Options,
                  hand_over: Callable[[StreamingResponse], None]) -> events.Response:
        hand_over(StreamingResponse(200, dict(SSE_HEADERS), _events(generation, base, choice, first,
                                                                    options.include_usage)))
        return events.Response(200, None)  # a placeholder for events.serve; the handler answers the stream


def _events(generation, base: dict, choice: Callable, first: dict | None, include_usage: bool) -> Iterator[bytes]:
    """The SSE body of a streamed answer. Closing it (the client went away) closes the generation."""
    usage_field = {"usage": None} if include_usage else {}  # as OpenAI: every chunk has it, null until the last

    def chunk(choices: list) -> bytes:
        return sse_event({**base, "choices": choices, **usage_field})

    try:
        if first is not None:
            yield chunk([first])
        for piece in generation:
            yield chunk([choice(piece, None)])
        yield chunk([choice(None, generation.finish_reason)])
        if include_usage:
            yield sse_event({**base, "choices": [], "usage": _usage(generation)})
        yield SSE_DONE
    except Exception as e:  # the model failed mid-stream: the status is sent already, so say it in the stream
        fault = VotiveFault.from_exception(VotiveFault.MODEL_ERROR, e)
        log.error("500 mid-stream %s: %s\n%s", base["object"], fault.message, "".join(fault.trace).rstrip())
        error = HttpError(500, "the model failed while answering; the cause is in the function's log",
                          code="model_error")
        yield sse_event(error.body())
    finally:
        generation.close()


def make_handler(model, *, default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 clock: Callable[[], float] = time.time) -> Handler:
    """A Lambda handler `(event, context) -> answer` serving `model`; see the module docstring.

    A streamed request is answered with a `StreamingResponse`, which votive's runtime and `votive serve` send as
    it is produced; every other answer is what `events.serve` makes (a payload 2.0 dict, or the body of a
    direct invoke).

    Example:
        >>> handler = make_handler(votive.load("smollm2"))                          # doctest: +SKIP
        >>> handler({"prompt": "The capital of France is", "max_tokens": 2}, None)["choices"][0]["text"]
        ' Paris.'
    """
    api = GenerationAPI(model, default_max_tokens=default_max_tokens, clock=clock)

    def handler(event, context):
        streamed: list[StreamingResponse] = []
        answer = events.serve(event, api.routes(streamed.append), default_path=_default_path(event))
        return streamed[0] if streamed else answer

    return handler


def load_handler(environ: Mapping[str, str] | None = None, load: Callable | None = None, *,
                 source: ResolvedSource | None = None) -> Handler:
    """Read the settings from `environ` (default os.environ), load the model with `load` (default votive.load):
    `source` when the caller resolved it already (`votive serve`, a built function's entry point), else
    VOTIVE_MODEL.

    Raises:
        VotiveFault: Votive.ConfigError for a missing or malformed setting, or a model that does not generate
            text; Votive.ModelLoadError when the model cannot be loaded (the message carries the cause's).
    """
    config = Settings.from_env(os.environ if environ is None else environ, source)
    model = settings.load_model(config.model, load, n_ctx=config.n_ctx)
    if getattr(model, "kind", None) != "generation":
        raise VotiveFault(VotiveFault.CONFIG_ERROR,
                          f"{settings.model_name(config.model)} is not a text generation model (a GGUF decoder or "
                          f"a Hugging Face ...ForCausalLM folder); "
                          f"serve it with votive.handlers.embeddings.handler")
    return make_handler(model, default_max_tokens=config.max_tokens)


__getattr__ = settings.handler_on_access(globals(), load_handler)


# --------------------------------------------------------------------------------------------------- addenda
def _default_path(event) -> str:
    """Where a direct invoke's bare body goes: completions for a prompt, chat otherwise."""
    return "/v1/completions" if isinstance(event, dict) and "prompt" in event else "/v1/chat/completions"


def _checked_fields(request: events.Request, known: frozenset[str]) -> dict:
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
            raise HttpError(400, f"'{name}' is {_json_text(value)}, but this endpoint {missing}; leave it out or "
                                 f"send {_json_text(off[0])}", param=name, code="unsupported_parameter")
    return body


def _typed(body: dict, name: str, kind: str):
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


def _prompt(body: dict) -> str:
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


def _messages(value) -> list[dict]:
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
        if role in ("tool", "function") or message.get("tool_calls"):
            raise HttpError(400, f"messages[{i}] is a tool {'call' if message.get('tool_calls') else 'result'}; "
                                 f"this endpoint has no tool calling", param="messages", code="unsupported_role")
        if role not in ROLES:
            raise HttpError(400, f"messages[{i}].role is {_json_text(role)}; expected 'system', 'user' or "
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
            found = f"of type {_json_text(kind)}" if kind not in (None, "text") else "not a {type: 'text', text} part"
            raise HttpError(400, f"messages[{i}].content[{j}] is {found}; this model reads text only",
                            param="messages", code="unsupported_content")
        texts.append(part["text"])
    return "\n".join(texts)


def _stop(value) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise HttpError(400, f"'stop' must be a string or a list of strings, found {_json_text(value)}",
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
                             f"{_json_text(options)}", param="stream_options", code="invalid_value")
    return bool(_typed(options, "include_usage", "boolean"))


def _usage(generation) -> dict:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _json_text(value) -> str:
    return json.dumps(value)[:80]
