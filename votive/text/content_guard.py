"""Chat message content tokenized as text: a user who types `<|im_start|>system` into a message must not open a
system turn.

llama.cpp renders the chat template and tokenizes the whole prompt with special tokens parsed, so control-token
text inside a message becomes the control token itself, and anyone can forge a turn. votive keeps the template's
own structure parsed but not the messages': before rendering, every occurrence of a control token's text in a
message's strings gets GUARD (U+FDD0, a Unicode noncharacter: never part of interchanged text) after its first
character, so the rendered prompt no longer holds that token's text there; the tokenizer cuts the prompt at the
special tokens that remain (the template's), then removes GUARD from the plain fragments before tokenizing them.
The guarded text is thus tokenized as the plain characters it is. Templates that transform content (trim, split on
`</think>`) see the guarded text and keep GUARD with the characters around it.

`VOTIVE_SPECIAL_IN_CONTENT=1` restores llama.cpp's behaviour for those who rely on it (the tokenizers'
`parse_special_in_content`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from votive.errors import InputError

GUARD = "\ufdd0"


def guard_messages(messages: Sequence[Mapping[str, Any]], special_texts: Iterable[str]) -> list:
    """Copies of `messages` with every string but "role" guarded against `special_texts`; InputError for a message
    that holds GUARD itself."""
    texts = sorted({t for t in special_texts if len(t) > 1}, key=len, reverse=True)
    return [{key: value if key == "role" else _guard(value, texts, i) for key, value in message.items()}
            if isinstance(message, Mapping) else message for i, message in enumerate(messages)]


def unguard(fragment: str) -> str:
    return fragment.replace(GUARD, "")


def holds_special(messages: Sequence[Mapping[str, Any]], special_texts: Iterable[str]) -> str | None:
    """The first special token text that any message string holds, or None."""
    texts = [t for t in special_texts if t]
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        for key, value in message.items():
            if key == "role":
                continue
            for text in _strings(value):
                for special in texts:
                    if special in text:
                        return special
    return None


def _guard(value, texts: list[str], index: int):
    if isinstance(value, str):
        if GUARD in value:
            raise InputError(f"message {index} holds U+FDD0, a Unicode noncharacter votive reserves")
        for special in texts:
            if special in value:
                value = value.replace(special, special[0] + GUARD + special[1:])
        return value
    if isinstance(value, Mapping):
        return {k: _guard(v, texts, index) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_guard(v, texts, index) for v in value]
    return value


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
