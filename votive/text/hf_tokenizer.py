"""The tokenizer of a Hugging Face decoder folder, as transformers uses it: tokenizer.json through the `tokenizers`
library, BOS / EOS and the chat template from tokenizer_config.json (or chat_template.jinja, where transformers 5
saves it), the ids that end a generation from generation_config.json and config.json.

It offers what the decoders and the generation handler call on a GGUF model's tokenizer
(votive.text.gguf_tokenizer.GGUFTokenizer): `encode(text, add_special)`, `decode`, `stream_decoder`, `eos_ids`,
`chat_template`, `render_chat`, `encode_chat`. Encoding follows transformers: `encode(text)` applies
tokenizer.json's post-processor (Llama 3's adds <|begin_of_text|>, Qwen's adds nothing), and a chat prompt is
encoded without it (`apply_chat_template` passes add_special_tokens=False: the template writes BOS itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from votive.errors import InputError, ModelConfigError
from votive.text.gguf_tokenizer import END_OF_TURN_TEXTS, check_text


class HFTokenizer:
    """Text to ids and back for one checkpoint folder.

    Args:
        folder: the checkpoint folder.
        library: returns the `tokenizers` module (tests may pass a stand-in); ModelConfigError when missing.

    Attributes:
        bos_token, eos_token (str): the texts tokenizer_config.json names ("" when it names none).
        eos_ids (frozenset[int]): ids that end a generation: generation_config.json's and config.json's
            eos_token_id, the id of tokenizer_config.json's eos_token, and every special added token whose
            text ends a turn (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, ...).
        chat_template_source (str | None): the Jinja template, or None when the folder has none.
    """

    def __init__(self, folder: Path, library=None):
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelConfigError(f"{folder}: no tokenizer.json (a decoder folder needs one)")
        tokenizers = (library or _import_tokenizers)()
        try:
            self.tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception on a malformed file
            raise ModelConfigError(f"{path}: cannot load tokenizer ({e})") from None
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.source = str(path)
        config = _json_object(folder / "tokenizer_config.json")
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.chat_template_source = _chat_template(folder, config)
        self._chat_template = None
        self.eos_ids = self._end_ids(folder)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _end_ids(self, folder: Path) -> frozenset[int]:
        ids: set[int] = set()
        for name in ("generation_config.json", "config.json"):
            value = _json_object(folder / name).get("eos_token_id")
            for i in value if isinstance(value, list) else [value]:
                if isinstance(i, int) and not isinstance(i, bool):
                    ids.add(i)
        if self.eos_token and self.tokenizer.token_to_id(self.eos_token) is not None:
            ids.add(self.tokenizer.token_to_id(self.eos_token))
        for token in self.tokenizer.get_added_tokens_decoder().values():
            if token.special and token.content in END_OF_TURN_TEXTS:
                ids.add(self.tokenizer.token_to_id(token.content))
        return frozenset(ids)

    # -- encoding and decoding

    parse_special_in_content = False  # True: special-token text in chat messages is parsed (transformers' way)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`, special tokens written in it parsed; with add_special, tokenizer.json's
        post-processor adds what it adds (BOS for Llama 3)."""
        check_text(text)
        return self.tokenizer.encode(text, add_special_tokens=add_special).ids

    def decode(self, ids, special: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=not special)

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        """A decoder fed one id at a time that hands out text only once its characters are whole."""
        return StreamDecoder(lambda ids: self.decode(ids, special))

    # -- chat

    @property
    def chat_template(self):
        """The `votive.text.chat.ChatTemplate` (compiled on first use); ModelConfigError when the folder has none."""
        if self._chat_template is None:
            from votive.text.chat import ChatTemplate

            if self.chat_template_source is None:
                raise ModelConfigError(f"{self.source}: the folder has no chat template (tokenizer_config.json "
                                       f"'chat_template' or chat_template.jinja)")
            self._chat_template = ChatTemplate(self.chat_template_source, bos_token=self.bos_token,
                                               eos_token=self.eos_token)
        return self._chat_template

    def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **extra)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                    **extra) -> list[int]:
        """Ids of a chat prompt as transformers' apply_chat_template(tokenize=True) makes them: the rendered text
        encoded without the post-processor's tokens. The `tokenizers` library parses special tokens wherever they
        are, so a message holding a special token's text is refused (InputError) unless
        `parse_special_in_content` allows it: votive tokenizes message content as text (content_guard.py)."""
        if not self.parse_special_in_content:
            from votive.text.content_guard import holds_special

            specials = [t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special]
            found = holds_special(messages, specials)
            if found is not None:
                raise InputError(f"a message holds the special token text {found!r}: votive tokenizes message "
                                 f"content as text and cannot do so for this tokenizer; remove it, or set "
                                 f"VOTIVE_SPECIAL_IN_CONTENT=1 to parse it as transformers and llama.cpp do")
        return self.encode(self.render_chat(messages, add_generation_prompt, **extra), add_special=False)


class StreamDecoder:
    """Text of ids pushed one at a time, through a whole-sequence `decode` (the tokenizers library has no
    per-token bytes): each push decodes a short window of recent ids and hands out what it added, unless that
    ends in U+FFFD, a character whose bytes are still arriving (text-generation-inference's prefix/read offsets).
    """

    def __init__(self, decode):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context (a tokenizer may strip a leading space)
        self._read = 0  # ids before this are already handed out

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(before) :]


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ModelConfigError("a Hugging Face decoder's tokenizer.json needs the `tokenizers` library, which is "
                               "not installed (pip install 'votive[tokenizers]')") from None
    return tokenizers


def _json_object(path: Path) -> dict:
    """The JSON object in `path`, or {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _token_text(value) -> str:
    """A special token as tokenizer_config.json gives it: a string, or an AddedToken object with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _chat_template(folder: Path, config: dict) -> str | None:
    """chat_template.jinja (transformers 5 saves it there), else tokenizer_config.json's chat_template: a string,
    or a list of {name, template} whose "default" entry is the one transformers uses."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    value = config.get("chat_template")
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value else None
