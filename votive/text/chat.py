"""Chat templates: a model's Jinja `tokenizer.chat_template`, rendered as Hugging Face transformers renders it.

transformers' `apply_chat_template` (src/transformers/utils/chat_template_utils.py) compiles the template in
jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks and the loopcontrols extension, adds a
`tojson` filter that leaves non-ASCII and HTML characters alone, and the globals `raise_exception` and
`strftime_now`; it renders with `messages`, `tools`, `add_generation_prompt` and the special tokens
(`bos_token`, `eos_token`). Templates are written against exactly that, so we give them the same.

A file without a template: llama.cpp falls back to ChatML for every model, which is wrong for Gemma. We pick a
built-in by vocabulary instead (`builtin_template_for`): Gemma's turn markers or ChatML's, and refuse otherwise.
jinja2 is imported only when a template is first compiled.

Example:
    >>> t = ChatTemplate(BUILTIN_TEMPLATES["chatml"])
    >>> t.render([{"role": "user", "content": "Hi"}])
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from votive.errors import ChatTemplateError, ChatTemplateLimitError, InputError, ModelConfigError

# Written for votive; they give the prompt formats these model families were tuned on.
BUILTIN_TEMPLATES = {
    # Gemma: "user" and "model" turns; a system message becomes the start of the first user turn.
    "gemma": (
        "{{ bos_token }}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system_text = messages[0]['content'] if messages[0]['content'] is string"
        " else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
        "{%- set system_prefix = system_text ~ '\\n\\n' -%}"
        "{%- set turns = messages[1:] -%}"
        "{%- else -%}"
        "{%- set system_prefix = '' -%}"
        "{%- set turns = messages -%}"
        "{%- endif -%}"
        "{%- for message in turns -%}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
        "{{ raise_exception('Gemma chats alternate user and assistant turns, starting with user, after an optional"
        " system message; turn ' ~ loop.index ~ ' is ' ~ message['role']) }}"
        "{%- endif -%}"
        "{{ '<start_of_turn>' ~ ('model' if message['role'] == 'assistant' else 'user') ~ '\\n' }}"
        "{%- if loop.first %}{{ system_prefix }}{% endif -%}"
        "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
        "{%- else -%}"
        "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] | trim }}{% endfor %}"
        "{%- endif -%}"
        "{{ '<end_of_turn>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
    ),
    # ChatML (SmolLM, Qwen, many fine-tunes): <|im_start|>role\ncontent<|im_end|>\n per message.
    "chatml": (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' ~ message['role'] ~ '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
        "{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
}

_MAX_STRFTIME_CHARS = 256  # a date format; a long one is an attack on memory

# The tokens that identify each built-in's family in a vocabulary.
_BUILTIN_MARKERS = {
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
}


def builtin_template_for(vocab: Mapping[str, int]) -> str | None:
    """The built-in template whose turn markers are all in `vocab` (token text -> id), else None."""
    for name, markers in _BUILTIN_MARKERS.items():
        if all(m in vocab for m in markers):
            return BUILTIN_TEMPLATES[name]
    return None


class ChatTemplate:
    """One compiled chat template.

    Args:
        source: the Jinja text (a GGUF file's tokenizer.chat_template, or a BUILTIN_TEMPLATES value).
        bos_token, eos_token: the texts of the model's BOS and EOS tokens, which templates may write.
        now: the clock behind the templates' `strftime_now` (a template may print today's date).
    """

    def __init__(
        self, source: str, bos_token: str = "", eos_token: str = "", now: Callable[[], datetime] = datetime.now
    ):
        if not isinstance(source, str) or not source:
            raise ModelConfigError(f"a chat template must be non-empty Jinja text, got {source!r}")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._now = now
        self._env = self._compiled = None

    def compile(self) -> None:
        """Compile now rather than on the first render (a handler does it at init), and render one user message
        as a trial, so that a template that cannot render within the bounds is refused here, not per request.

        Raises:
            ModelConfigError: the template is not valid Jinja, or the trial render crossed a bound (time, size,
                recursion: ChatTemplateLimitError). Other failures of the trial (the template's raise_exception, a
                TypeError on these messages) are left to each request, which gets them as a 400.
        """
        if self._compiled is not None:
            return
        import jinja2
        import jinja2.ext

        from votive.text.template_bounds import BoundedEnvironment, compile_bounded, render_bounded

        # Rendering is bounded in time and size (votive.text.template_bounds): the template is untrusted text.
        env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.wrap_filters()
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = self._strftime_now
        try:
            compiled = compile_bounded(env, self.source)
        except jinja2.TemplateSyntaxError as e:
            problem = f"{e.message} (template line {e.lineno})"
            raise ModelConfigError(f"the chat template is not valid Jinja: {problem}") from None
        except ChatTemplateError as e:
            raise ModelConfigError(f"the chat template is refused: {e}") from None
        trial = self._variables([{"role": "user", "content": "Hello"}], True, None, {})
        try:
            render_bounded(env, compiled, trial)
        except ChatTemplateLimitError as e:
            raise ModelConfigError(f"the chat template failed a trial render of one user message: {e}") from None
        except Exception:  # noqa: BLE001 (refusing or failing on some messages is a per-request 400, as before)
            pass
        self._env, self._compiled = env, compiled

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        **extra,
    ) -> str:
        """The prompt text for `messages`.

        Args:
            messages: [{"role": "system" | "user" | "assistant" | ..., "content": str or [{"type": "text", ...}]}].
            add_generation_prompt: end with the opening of an assistant turn, for the model to continue.
            tools: tool schemas for templates that take them; None for none.
            extra: further template variables (e.g. enable_thinking).

        Raises:
            InputError: `messages` is not a list of dicts with a string "role".
            ChatTemplateError: the template refused the messages or failed on them (HTTP 400 for a request);
                ChatTemplateLimitError when it crossed a bound of `votive.text.template_bounds` (HTTP 500).
        """
        _check_messages(messages)
        self.compile()
        from votive.text.template_bounds import render_bounded

        try:
            return render_bounded(self._env, self._compiled,
                                  self._variables(messages, add_generation_prompt, tools, extra))
        except _TemplateRaised as e:
            raise ChatTemplateError(f"the chat template refused the messages: {e.message}", e.message) from None
        except ChatTemplateError:  # a bound crossed (ChatTemplateLimitError)
            raise
        except Exception as e:  # noqa: BLE001 (untrusted code: whatever it raises is the template failing)
            text = f"{type(e).__name__}: {e}"
            raise ChatTemplateError(f"the chat template failed on these messages: {text}", text) from None

    def _variables(self, messages, add_generation_prompt, tools, extra: dict) -> dict:
        return {**extra, "bos_token": self.bos_token, "eos_token": self.eos_token,
                "messages": [dict(m) for m in messages], "tools": tools,
                "add_generation_prompt": bool(add_generation_prompt)}

    def _strftime_now(self, fmt) -> str:
        if not isinstance(fmt, str) or len(fmt) > _MAX_STRFTIME_CHARS:  # '%c' * n grows ~12x in one call
            raise ChatTemplateLimitError(f"strftime_now takes a format of at most {_MAX_STRFTIME_CHARS} characters")
        return self._now().strftime(fmt)


class _TemplateRaised(Exception):
    """What a template's raise_exception(message) raises; render turns it into ChatTemplateError."""

    def __init__(self, message: str):
        self.message = str(message)
        super().__init__(self.message)


def _raise_exception(message) -> None:
    raise _TemplateRaised(message)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # Not jinja's own tojson, which escapes <, >, & and ' for HTML: prompts want the characters themselves.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _check_messages(messages) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InputError(f"messages must be a list of {{'role', 'content'}} objects, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InputError(f"messages[{i}] must be an object with 'role' and 'content', got {type(m).__name__}")
        if not isinstance(m.get("role"), str):
            raise InputError(f"messages[{i}] needs a string 'role', got {m.get('role')!r}")
