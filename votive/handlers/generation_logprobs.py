"""Log probabilities in OpenAI's two answer shapes, from a generation's entries (token id, logprob, alternatives;
see `votive.models.decoding.Generation.logprobs`).

Completions (legacy): `{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{text: logprob}, ...],
"text_offset": [...]}`, offsets counted in characters from the start of the prompt, as OpenAI counts them
without `echo`. Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
"bytes"}]}], "refusal": null}`.

A token's text is its bytes read as UTF-8, a character split over tokens showing as U+FFFD; `bytes` holds the
exact bytes. Streamed, each chunk carries the entries of the tokens produced since the previous chunk, so the
formatters keep a running text offset per choice.
"""

from __future__ import annotations


class TokenText:
    """A tokenizer's per-token bytes and text, memoised (a vocabulary is read a few tokens at a time)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._memo: dict[int, tuple[bytes, str]] = {}

    def __call__(self, token_id: int) -> tuple[bytes, str]:
        found = self._memo.get(token_id)
        if found is None:
            token_bytes = getattr(self.tokenizer, "token_bytes", None)
            raw = token_bytes(token_id) if token_bytes else self.tokenizer.decode([token_id]).encode("utf-8")
            found = self._memo[token_id] = (raw, raw.decode("utf-8", errors="replace"))
        return found


class CompletionLogprobs:
    """One completions choice's `logprobs`, chunk by chunk: call it with each chunk's entries."""

    def __init__(self, text: TokenText, offset: int):
        self.text = text
        self.offset = offset  # characters before the next token: the prompt's, then each token's

    def __call__(self, entries) -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob, top in entries:
            piece = self.text(token)[1]
            out["tokens"].append(piece)
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append({self.text(t)[1]: lp for t, lp in top})
            out["text_offset"].append(self.offset)
            self.offset += len(piece)
        return out


class ChatLogprobs:
    """One chat choice's `logprobs`: call it with each chunk's entries."""

    def __init__(self, text: TokenText):
        self.text = text

    def __call__(self, entries) -> dict:
        return {"content": [{**self._token(token, logprob), "top_logprobs": [self._token(t, lp) for t, lp in top]}
                            for token, logprob, top in entries], "refusal": None}

    def _token(self, token: int, logprob: float) -> dict:
        raw, piece = self.text(token)
        return {"token": piece, "logprob": logprob, "bytes": list(raw)}
