"""Which tokenizer.json files votive's own WordPiece tokenizer reproduces, and reading the parts it uses.

A file passes `unsupported_features` only when every part is one `votive.text.wordpiece.WordPieceTokenizer`
reproduces exactly; anything else (another model such as BPE or Unigram, another normalizer or pre-tokenizer,
single-word added tokens ...) is named, so that `load_tokenizer` can hand the file to the `tokenizers` library
or say why it cannot.

Upstream: huggingface/tokenizers `tokenizers/src/` (read at commit 3ba8ad00; checked against tokenizers 0.23.3):
`tokenizer/added_vocabulary.rs` (add_tokens), `processors/template.rs` and `bert.rs`, `tokenizer/mod.rs`
(post_process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from votive.errors import ModelConfigError
from votive.text.wordpiece_model import AddedToken

# -------------------------------------------------------------------------- what WordPieceTokenizer reproduces
_WORDPIECE_KEYS = {"type", "unk_token", "continuing_subword_prefix", "max_input_chars_per_word", "vocab"}
_NORMALIZER_KEYS = {"type", "clean_text", "handle_chinese_chars", "strip_accents", "lowercase"}
_ADDED_TOKEN_KEYS = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}


def unsupported_features(spec: Any) -> list[str]:
    """What in a parsed tokenizer.json `WordPieceTokenizer` does not reproduce exactly; empty when nothing.

    Reproduced: a WordPiece model; a BertNormalizer or none; the BertPreTokenizer; a BertProcessing,
    TemplateProcessing or no post-processor; added tokens that are not single_word. The file's decoder,
    truncation and padding play no part in encoding here.

    Example:
        >>> unsupported_features({"version": "1.0", "model": {"type": "BPE"}})[0]
        'model type BPE'
    """
    if not isinstance(spec, dict):
        return [f"a {type(spec).__name__} at the top level, not an object"]
    problems = []
    if spec.get("version") != "1.0":
        problems.append(f"format version {spec.get('version')!r}")
    model = spec.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        problems.append(f"model type {model.get('type')}" if isinstance(model, dict) else f"model {model!r}")
    elif not _WORDPIECE_KEYS <= model.keys() or not isinstance(model["vocab"], dict):
        problems.append(f"a WordPiece model without {sorted(_WORDPIECE_KEYS - model.keys()) or 'a vocab object'}")
    norm = spec.get("normalizer")
    if norm is not None and (not isinstance(norm, dict) or norm.get("type") != "BertNormalizer"):
        problems.append(f"normalizer {_describe(norm)}")
    elif norm is not None and not ({"clean_text", "handle_chinese_chars", "lowercase"} <= norm.keys()
                                   and norm.keys() <= _NORMALIZER_KEYS):
        problems.append(f"a BertNormalizer with fields {sorted(norm)}")
    pre = spec.get("pre_tokenizer")
    if not isinstance(pre, dict) or pre.get("type") != "BertPreTokenizer":
        problems.append(f"pre_tokenizer {_describe(pre)}")
    post = spec.get("post_processor")
    if post is not None and _template_problem(post):
        problems.append(_template_problem(post))
    for token in spec.get("added_tokens") or []:
        if not isinstance(token, dict) or not isinstance(token.get("content"), str):
            problems.append(f"added token {token!r}")
        elif token.get("single_word"):
            problems.append(f"added token {token['content']!r} with single_word")
        elif token.keys() != _ADDED_TOKEN_KEYS:  # tokenizers requires every field and knows no others
            problems.append(f"added token {token['content']!r} with fields {sorted(token)}")
    return problems


def _describe(part) -> str:
    if isinstance(part, dict):
        inner = part.get("normalizers") or part.get("pretokenizers") or part.get("processors")
        kinds = f" [{', '.join(str(p.get('type')) for p in inner if isinstance(p, dict))}]" if inner else ""
        return f"{part.get('type')}{kinds}"
    return repr(part)


def _template_problem(post) -> str | None:
    """Why the post-processor is not one `template_ids` reads, or None."""
    if not isinstance(post, dict):
        return f"post_processor {post!r}"
    if post.get("type") == "BertProcessing":
        ok = all(isinstance(post.get(k), list) and len(post[k]) == 2 and isinstance(post[k][1], int)
                 for k in ("cls", "sep"))
        return None if ok else f"a BertProcessing without cls and sep pairs ({post})"
    if post.get("type") != "TemplateProcessing":
        return f"post_processor {_describe(post)}"
    single, specials = post.get("single"), post.get("special_tokens")
    if not isinstance(single, list) or not isinstance(specials, dict):
        return "a TemplateProcessing without single and special_tokens"
    sequences = [p for p in single if isinstance(p, dict) and "Sequence" in p]
    if len(sequences) != 1 or sequences[0]["Sequence"].get("id") != "A":
        return f"a single-sequence template {single} (expected one Sequence A)"
    for piece in single:
        if isinstance(piece, dict) and "Sequence" in piece:
            continue
        name = piece.get("SpecialToken", {}).get("id") if isinstance(piece, dict) else None
        entry = specials.get(name) if isinstance(name, str) else None
        if not isinstance(entry, dict) or not all(isinstance(i, int) for i in entry.get("ids", [None])):
            return f"a template piece {piece} whose special token has no ids"
    return None


def template_ids(post, source: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ids before the text, ids after it) for one sequence."""
    if post is None:
        return (), ()
    if post["type"] == "BertProcessing":
        return (post["cls"][1],), (post["sep"][1],)
    before: list[int] = []
    after: list[int] = []
    side = before
    for piece in post["single"]:
        if "Sequence" in piece:
            side = after
        else:
            side += post["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
    return tuple(before), tuple(after)


def added_vocabulary(entries: list[dict], vocab: dict[str, int]) -> list[AddedToken]:
    """The added vocabulary as AddedVocabulary::add_tokens builds it from the file: a token already in the model's
    vocabulary keeps that id, a new one gets the next id after it (the file's "id" is not what decides); a
    repeated content keeps its first id and takes the later flags; empty contents are skipped."""
    tokens: dict[str, AddedToken] = {}
    next_id = len(vocab)
    for entry in entries:
        content = entry["content"]
        if not content:
            continue
        if content in tokens:
            token_id = tokens[content].id
        elif content in vocab:
            token_id = vocab[content]
        else:
            token_id, next_id = next_id, next_id + 1
        tokens[content] = AddedToken(content, token_id, bool(entry["normalized"]), bool(entry["lstrip"]),
                                     bool(entry["rstrip"]))
    return list(tokens.values())


# -------------------------------------------------------------------------------------------- reading the file
def read_json(path: Path):
    """The parsed JSON of `path`; a missing or malformed file raises ModelConfigError naming it."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{path}: cannot read JSON ({e})") from None
