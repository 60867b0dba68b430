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
    VOTIVE_MAX_N       the most choices (`n`) a request may ask for (default 8)
    VOTIVE_PREFIX_CACHE_MB  memory for the KV cache of recent prompt prefixes (default 256; 0: none)
    VOTIVE_WARM_PREFIX a prompt prefix evaluated at init and kept cached: text (as a completions prompt starts),
                       or a JSON list of chat messages (rendered by the chat template without a generation
                       prompt, as a chat starting with them begins)
    VOTIVE_BACKEND     numpy (default) or cupy, read by `votive.load`

Decisions (OpenAI's behaviour where it costs nothing, a 400 that says why where we cannot honour a field):
- Every field OpenAI defines for these endpoints is known. Fields for features we do not have (best_of,
  echo, suffix) are accepted only at the value that turns them off. Any
  other field is refused by name: a misspelt sampling parameter must not be ignored silently. `model` and
  `user` are accepted and ignored.
- llama.cpp's sampling fields are accepted too: top_k, min_p, repetition_penalty. temperature defaults to 1
  and top_p to 1, as OpenAI's do; temperature 0 is greedy. `seed` reproduces the tokens in any process (numpy's
  PCG64; choice i of n draws from the seed sequence [seed, i], choice 0 as a single generation does).
- presence_penalty and frequency_penalty (-2 to 2) are OpenAI's: logit -= frequency * count + presence *
  (count > 0), count over the tokens generated so far in that choice, not the prompt (llama.cpp's penalties
  count the last 64 tokens, prompt included). `logit_bias` maps token ids (strings of digits) to -100..100,
  added to the logits before the penalties, as llama.cpp orders them; an id outside the vocabulary is a 400.
- Log probabilities are of the distribution the sampler draws from after logit_bias and the penalties, before
  temperature and top-k/top-p/min-p (llama.cpp's server reports the same, pre-sampling, probabilities), so they
  do not change with temperature. Completions: `logprobs` 0 to 5 alternatives, answered as {tokens,
  token_logprobs, top_logprobs, text_offset}, offsets in characters from the start of the prompt. Chat:
  `logprobs: true` and `top_logprobs` 0 to 20 (over 20, or without logprobs, a 400), answered as {content:
  [{token, logprob, bytes, top_logprobs}], refusal: null}. Streamed, each chunk carries its own tokens' entries.
  Stop strings are cut from the text, not from the logprobs of the tokens that made them.
- `n` choices (1 to VOTIVE_MAX_N) continue one evaluation of the prompt, each with its own copy of its KV cache;
  since the copies take memory as one context each, n * (prompt + max_tokens) must fit the context (else a 400,
  code context_length_exceeded). Streamed, the choices take turns, each chunk naming its choice's index.
  `usage.completion_tokens` counts the tokens of every choice.
- The prefix cache (votive.models.prefix_cache) lends a prompt the KV cache of the longest beginning it shares
  with a recent prompt; usage then says how many prompt tokens came from it as
  `prompt_tokens_details.cached_tokens`. Answers are bit-identical with and without it: a prompt's passes are
  cut the same way in both cases (votive.models.decoding.prompt_passes).
- `max_tokens` (or chat's `max_completion_tokens`) is 1 to the context length. A prompt that leaves no room in
  the context is refused (code context_length_exceeded); one that leaves less than max_tokens ends at the
  context's end with finish_reason "length".
- `prompt` is a string or a list of one string; token-id prompts are refused. `stop` is a string or up to 4.
- Chat `tools`, `tool_choice`, tool messages and `response_format` (json_object, json_schema enforced while
  decoding): see `votive.handlers.generation_tools`.
- Chat `content` is a string or a list of text parts (joined with newlines); other parts (images, audio) are
  refused. Role "developer" is read as "system". Whatever the chat template
  itself refuses (roles out of order, for Gemma) is a 400 with the template's words.
- The chat template is untrusted text (a GGUF's metadata) and renders within bounds (`votive.text.template_bounds`:
  2 s, 8 Mi characters per value and for the prompt). One that crosses a bound on a one-message trial render is
  refused at init (Votive.ModelLoadError); one that crosses it only on some messages answers those with a 500
  (code chat_template_error), and the function keeps serving.
- `usage` counts the prompt tokens as the model saw them (BOS and the chat template's tokens included).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from votive.errors import ChatTemplateLimitError, InputError, ModelConfigError, VotiveFault
from votive.handlers import events, settings
from votive.handlers.generation_logprobs import ChatLogprobs, CompletionLogprobs, TokenText
from votive.handlers.generation_request import (CHAT_FIELDS, COMPLETION_FIELDS, DEFAULT_MAX_N, SAMPLING_FIELDS,
                                                Options, chat_messages, checked_fields, parse_options, prompt_text)
from votive.handlers.generation_tools import answer_message, chat_plan
from votive.handlers.http_errors import HttpError
from votive.protocol.streaming import SSE_DONE, SSE_HEADERS, StreamingResponse, sse_event

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

log = logging.getLogger("votive")

DEFAULT_MAX_TOKENS = 256  # when a request sends no max_tokens: bounded, so no request runs on unnoticed
DEFAULT_PREFIX_CACHE_MB = 256  # votive.models.prefix_cache.DEFAULT_BUDGET_MB, not imported: numpy is heavy
Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Settings:
    """The handler's configuration, as the VOTIVE_* environment variables give it."""

    model: str | ResolvedSource  # VOTIVE_MODEL: the source votive.load resolves (or one resolved already)
    n_ctx: int | None = None  # VOTIVE_N_CTX: None leaves it to votive.load
    max_tokens: int = DEFAULT_MAX_TOKENS  # VOTIVE_MAX_TOKENS: the default for requests without one
    max_n: int = DEFAULT_MAX_N  # VOTIVE_MAX_N: the most choices a request may ask for
    prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB  # VOTIVE_PREFIX_CACHE_MB: 0 keeps no prefixes
    warm_prefix: str | None = None  # VOTIVE_WARM_PREFIX: text, or a JSON list of chat messages

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: ResolvedSource | None = None) -> "Settings":
        """Read and check the settings (`source`, when given, is the model instead of VOTIVE_MODEL). Raises
        VotiveFault (Votive.ConfigError) naming the bad variable."""
        model = settings.required_model(environ, "a decoder: a .gguf file, hf:org/name/file.gguf, a Hugging "
                                                 "Face ...ForCausalLM folder or an alias, e.g. VOTIVE_MODEL=smollm2", source)
        raw = environ.get("VOTIVE_PREFIX_CACHE_MB", "").strip()
        off = raw.isascii() and raw.isdigit() and not raw.lstrip("0")  # 0 turns the prefix cache off
        cache_mb = 0 if off else settings.positive_int(environ, "VOTIVE_PREFIX_CACHE_MB", DEFAULT_PREFIX_CACHE_MB)
        return cls(model, settings.positive_int(environ, "VOTIVE_N_CTX"),
                   settings.positive_int(environ, "VOTIVE_MAX_TOKENS", DEFAULT_MAX_TOKENS),
                   settings.positive_int(environ, "VOTIVE_MAX_N", DEFAULT_MAX_N), cache_mb,
                   environ.get("VOTIVE_WARM_PREFIX") or None)


class GenerationAPI:
    """The routes of a generation endpoint around one loaded decoder.

    Args:
        model: a decoder as `votive.load` returns it for a GGUF file: `.start(prompt_or_ids, max_tokens=...,
            stop=..., **sampling) -> Generation`, `.tokenize(text)`, `.tokenizer.encode_chat(messages)`,
            `.model_id`, `.kind`, `.n_ctx`, `.backend`.
        default_max_tokens: max_tokens for a request that sends none (capped at the context length).
        clock: epoch seconds, for `created`.
        max_n: the most choices a request may ask for.
        prefix_cache: a `votive.models.prefix_cache.PrefixCache` the prompts borrow from and feed, or None.
    """

    def __init__(self, model, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, clock: Callable[[], float] = time.time,
                 max_n: int = DEFAULT_MAX_N, prefix_cache=None):
        self.model = model
        self.default_max_tokens = default_max_tokens
        self.max_n = max_n
        self.prefix_cache = prefix_cache
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
        body = checked_fields(request, COMPLETION_FIELDS)
        prompt = prompt_text(body)
        options = self.options(body, request)
        try:
            ids = self.model.tokenize(prompt)
        except InputError as e:  # text the tokenizer cannot take (a lone surrogate)
            raise HttpError(400, f"'prompt': {e}", param="prompt", code="invalid_text") from None
        generations = self._start(self._fitted(ids, "prompt", options), options, "prompt")
        base = self._base("cmpl-", "text_completion")
        formats = self._logprobs(options, lambda text: CompletionLogprobs(text, len(prompt)))

        def choice(index: int, text: str | None, finish_reason: str | None, entries=None) -> dict:
            logprobs = None if entries is None else formats[index](entries)
            return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}

        if options.stream:
            return self._streamed(generations, base, choice, None, options, hand_over)
        choices = [choice(i, g.text(), g.finish_reason, getattr(g, "logprobs", None)) for i, g in enumerate(generations)]
        return {**base, "choices": choices, "usage": _usage(generations)}

    def chat_completions(self, request: events.Request, hand_over: Callable[[StreamingResponse], None]):
        """POST /v1/chat/completions."""
        body = checked_fields(request, CHAT_FIELDS)
        messages = chat_messages(body.get("messages"))
        options = self.options(body, request)
        plan = chat_plan(self.model, body)  # tools, tool_choice, response_format
        try:
            ids = self.model.tokenizer.encode_chat(messages, add_generation_prompt=True, **plan.template_extra)
        except ChatTemplateLimitError as e:  # the template crossed a rendering bound: its fault, not the request's
            log.error("chat template: %s", e)
            raise HttpError(500, f"{self.model.model_id}'s chat template cannot render these messages: {e}",
                            param="messages", code="chat_template_error") from None
        except InputError as e:  # ChatTemplateError: the template refused or failed on these messages
            raise HttpError(400, str(e), param="messages", code="invalid_messages") from None
        except ModelConfigError as e:
            raise HttpError(400, f"{self.model.model_id} has no chat template, so it cannot chat; send your own "
                                 f"prompt to /v1/completions ({e})", param="messages",
                            code="no_chat_template") from None
        generations = plan.wrap(self._start(self._fitted(ids, "messages", options), options, "messages"),
                                options.max_tokens, self.model.n_ctx)
        base = self._base("chatcmpl-", "chat.completion")
        formats = self._logprobs(options, ChatLogprobs)

        if options.stream:
            def choice(index: int, text: str | None, finish_reason: str | None, entries=None) -> dict:
                delta = {} if text is None else text if isinstance(text, dict) else {"content": text}
                logprobs = None if entries is None else formats[index](entries)
                return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}

            first = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None} for i in range(len(generations))]
            chunk_base = {**base, "object": "chat.completion.chunk"}
            return self._streamed(generations, chunk_base, choice, first, options, hand_over)
        choices = []
        for i, generation in enumerate(generations):
            message = answer_message(generation)
            entries = getattr(generation, "logprobs", None)
            logprobs = None if entries is None else formats[i](entries)
            choices.append({"index": i, "message": message, "logprobs": logprobs,
                            "finish_reason": generation.finish_reason})
        return {**base, "choices": choices, "usage": _usage(generations)}

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
        return parse_options(body, request, self.model.n_ctx, self._default_max_tokens(),
                             chat="messages" in body, max_n=self.max_n)

    def _default_max_tokens(self) -> int:
        return min(self.default_max_tokens, self.model.n_ctx)

    def _fitted(self, ids: list[int], param: str, options: Options) -> list[int]:
        """The prompt's token ids, or 400 when they leave the context no room for a single new token, or when
        `n` choices would hold more positions than one context: n * (prompt + max_tokens) <= n_ctx, each choice
        keeping its own copy of the prompt's cache."""
        n_ctx = self.model.n_ctx
        if len(ids) >= n_ctx:
            what = "prompt is" if param == "prompt" else "messages, as the chat template renders them, are"
            raise HttpError(400, f"the {what} {len(ids)} tokens, but the model's context holds {n_ctx} "
                                 f"(prompt and completion together); shorten it", param=param,
                            code="context_length_exceeded")
        positions = len(ids) + min(options.max_tokens, n_ctx - len(ids))
        if options.n > 1 and options.n * positions > n_ctx:
            raise HttpError(400, f"'n' is {options.n}: {options.n} choices of {len(ids)} prompt tokens and up to "
                                 f"{positions - len(ids)} new ones each exceed the {n_ctx} positions of the model's "
                                 f"context; lower n or max_tokens", param="n", code="context_length_exceeded")
        return ids

    def _start(self, ids: list[int], options: Options, param: str) -> list:
        """The request's generations: one per choice (the prompt evaluated once). Options the plain path does not
        use are passed only when set, so any decoder with `start` serves plain requests."""
        extra = {}
        if options.logprobs is not None:
            extra["logprobs"] = options.logprobs
        if self.prefix_cache is not None:
            extra["prefix_cache"] = self.prefix_cache
        try:
            if options.n > 1:
                return self.model.start_choices(ids, options.n, max_tokens=options.max_tokens, stop=options.stop,
                                                **extra, **options.sampling)
            return [self.model.start(ids, max_tokens=options.max_tokens, stop=options.stop, **extra,
                                     **options.sampling)]
        except InputError as e:  # the decoder's own checks (sampling ranges, prompt length, logit_bias ids)
            message = str(e)
            names = (*SAMPLING_FIELDS, "logit_bias", "max_tokens", "logprobs", "n")
            named = next((name for name in names if message.startswith(name)), param)
            raise HttpError(400, message, param=named, code="invalid_value") from None

    def _logprobs(self, options: Options, format_for: Callable) -> list | None:
        """One logprobs formatter per choice (they keep offsets across chunks), or None without logprobs."""
        if options.logprobs is None:
            return None
        text = TokenText(self.model.tokenizer)
        return [format_for(text) for _ in range(options.n)]

    # --- answers

    def _base(self, id_prefix: str, obj: str) -> dict:
        return {"id": id_prefix + secrets.token_hex(12), "object": obj, "created": int(self.clock()),
                "model": self.model.model_id}

    def _streamed(self, generations: list, base: dict, choice: Callable, first: list | None, options: Options,
                  hand_over: Callable[[StreamingResponse], None]) -> events.Response:
        hand_over(StreamingResponse(200, dict(SSE_HEADERS), _events(generations, base, choice, first,
                                                                    options.include_usage)))
        return events.Response(200, None)  # a placeholder for events.serve; the handler answers the stream


def _events(generations: list, base: dict, choice: Callable, first: list | None,
            include_usage: bool) -> Iterator[bytes]:
    """The SSE body of a streamed answer: the choices take turns, a piece each, every chunk naming its choice's
    index and carrying the logprobs of the tokens since that choice's last chunk. Closing it (the client went
    away) closes the generations."""
    usage_field = {"usage": None} if include_usage else {}  # as OpenAI: every chunk has it, null until the last

    def chunk(choices: list) -> bytes:
        return sse_event({**base, "choices": choices, **usage_field})

    try:
        if first is not None:
            yield chunk(first)
        sent = [0] * len(generations)  # logprob entries sent, per choice

        def news(index: int):
            entries = getattr(generations[index], "logprobs", None)
            if not entries or len(entries) == sent[index]:
                return None
            new, sent[index] = entries[sent[index]:], len(entries)
            return new

        running = [(i, iter(g)) for i, g in enumerate(generations)]
        while running:
            for turn in list(running):
                index, pieces = turn
                piece = next(pieces, None)
                if piece is None:
                    running.remove(turn)
                    yield chunk([choice(index, None, generations[index].finish_reason, news(index))])
                else:
                    yield chunk([choice(index, piece, None, news(index))])
        if include_usage:
            yield sse_event({**base, "choices": [], "usage": _usage(generations)})
        yield SSE_DONE
    except Exception as e:  # the model failed mid-stream: the status is sent already, so say it in the stream
        fault = VotiveFault.from_exception(VotiveFault.MODEL_ERROR, e)
        log.error("500 mid-stream %s: %s\n%s", base["object"], fault.message, "".join(fault.trace).rstrip())
        error = HttpError(500, "the model failed while answering; the cause is in the function's log",
                          code="model_error")
        yield sse_event(error.body())
    finally:
        for generation in generations:
            generation.close()


def make_handler(model, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, clock: Callable[[], float] = time.time,
                 max_n: int = DEFAULT_MAX_N, prefix_cache=None) -> Handler:
    """A Lambda handler `(event, context) -> answer` serving `model`; see the module docstring.

    A streamed request is answered with a `StreamingResponse`, which votive's runtime and `votive serve` send as
    it is produced; every other answer is what `events.serve` makes (a payload 2.0 dict, or the body of a
    direct invoke).

    Example:
        >>> handler = make_handler(votive.load("smollm2"))                          # doctest: +SKIP
        >>> handler({"prompt": "The capital of France is", "max_tokens": 2}, None)["choices"][0]["text"]
        ' Paris.'
    """
    api = GenerationAPI(model, default_max_tokens=default_max_tokens, clock=clock, max_n=max_n,
                        prefix_cache=prefix_cache)

    def handler(event, context):
        streamed: list[StreamingResponse] = []
        answer = events.serve(event, api.routes(streamed.append), default_path=_default_path(event),
                              context=context)  # the deadline the generate loop checks
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
    _check_chat_template(model)
    # message content is tokenized as text unless VOTIVE_SPECIAL_IN_CONTENT=1 (votive.text.content_guard)
    model.tokenizer.parse_special_in_content = settings.flag(os.environ if environ is None else environ,
                                                             "VOTIVE_SPECIAL_IN_CONTENT")
    return make_handler(model, default_max_tokens=config.max_tokens, max_n=config.max_n,
                        prefix_cache=_prefix_cache(model, config))


def _prefix_cache(model, config: Settings):
    """The prefix cache (None with VOTIVE_PREFIX_CACHE_MB=0), holding VOTIVE_WARM_PREFIX evaluated now, at init,
    so that it is inside Lambda's SnapStart snapshot or Modal's memory snapshot. The warm prefix is text (encoded
    as a completions prompt is) or a JSON list of chat messages (rendered by the model's chat template without a
    generation prompt, the start of every chat that begins with them)."""
    if config.prefix_cache_mb == 0 or not hasattr(model, "new_prefix_cache"):
        if config.warm_prefix:
            log.warning("VOTIVE_WARM_PREFIX is ignored: the prefix cache is off (VOTIVE_PREFIX_CACHE_MB=0) or the "
                        "model has none")
        return None
    cache = model.new_prefix_cache(config.prefix_cache_mb * 2**20)
    if config.warm_prefix:
        try:
            prompt = config.warm_prefix
            if prompt.lstrip().startswith("["):
                messages = chat_messages(json.loads(prompt))
                prompt = model.tokenizer.encode_chat(messages, add_generation_prompt=False)
            kept = model.warm_prefix(prompt, cache)
        except (ValueError, HttpError, InputError, ModelConfigError) as e:  # JSONDecodeError is a ValueError
            message = e.message if isinstance(e, HttpError) else str(e)
            raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_WARM_PREFIX: {message}") from None
        if not kept:  # a warning, not a refusal: the function serves the same answers, only slower
            log.warning("VOTIVE_WARM_PREFIX is not cached: over the %d MB of VOTIVE_PREFIX_CACHE_MB, or shorter than "
                        "the passes a cached prefix may end on with this backend (8 tokens on the CPU, 64 on the GPU)",
                        config.prefix_cache_mb)
        log.info("VOTIVE_WARM_PREFIX: %d tokens cached", kept)
    return cache


def _check_chat_template(model) -> None:
    """Compile the model's chat template and render it once, at init: one that crosses a rendering bound
    (`votive.text.template_bounds`) is refused here (Votive.ModelLoadError), not met by every chat request."""
    tokenizer = getattr(model, "tokenizer", None)
    if getattr(tokenizer, "chat_template_source", None) is None:
        return  # no template: chat requests get a 400 saying so, completions are served
    try:
        tokenizer.chat_template.compile()
    except ModelConfigError as e:
        raise VotiveFault(VotiveFault.MODEL_LOAD_ERROR, f"{getattr(model, 'model_id', 'the model')}: {e}") from None


__getattr__ = settings.handler_on_access(globals(), load_handler)


# --------------------------------------------------------------------------------------------------- addenda
def _default_path(event) -> str:
    """Where a direct invoke's bare body goes: completions for a prompt, chat otherwise."""
    return "/v1/completions" if isinstance(event, dict) and "prompt" in event else "/v1/chat/completions"


def _usage(generations: list) -> dict:
    """The prompt once, the completion tokens of every choice; the prompt tokens the prefix cache lent, as
    OpenAI's prompt_tokens_details.cached_tokens, when there were any."""
    prompt = generations[0].prompt_tokens
    completion = sum(g.completion_tokens for g in generations)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = getattr(getattr(generations[0], "prompt", None), "cached_tokens", 0)
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


