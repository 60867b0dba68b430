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
from typing import Any, Callable, Sequence

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


# One piece of a pair template: "A" or "B" (the first or second text) or a run of special-token ids, with the
# token type id every id of the piece gets.
PairPiece = tuple[str | tuple[int, ...], int]


def pair_template(post) -> tuple[PairPiece, ...] | None:
    """The post-processor's template for a pair of texts, or None when it has none that is read here.

    BertProcessing is `[CLS] A [SEP] B [SEP]` with type ids 0 0 0 1 1 (processors/bert.rs), RobertaProcessing
    `<s> A </s></s> B </s>` with type ids all 0 (processors/roberta.rs); TemplateProcessing spells its `pair` list
    out, each piece with its `type_id` (processors/template.rs).
    """
    if not isinstance(post, dict):
        return None
    if post.get("type") in ("BertProcessing", "RobertaProcessing"):
        if not all(isinstance(post.get(k), list) and len(post[k]) == 2 and isinstance(post[k][1], int)
                   for k in ("cls", "sep")):
            return None
        cls_id, sep_id = post["cls"][1], post["sep"][1]
        if post["type"] == "RobertaProcessing":
            return ((cls_id,), 0), ("A", 0), ((sep_id, sep_id), 0), ("B", 0), ((sep_id,), 0)
        return ((cls_id,), 0), ("A", 0), ((sep_id,), 0), ("B", 1), ((sep_id,), 1)
    pair, specials = post.get("pair"), post.get("special_tokens")
    if post.get("type") != "TemplateProcessing" or not isinstance(pair, list) or not isinstance(specials, dict):
        return None
    pieces = []
    for piece in pair:
        kind, spec = next(iter(piece.items())) if isinstance(piece, dict) and len(piece) == 1 else (None, None)
        type_id = spec.get("type_id", 0) if isinstance(spec, dict) else None
        if not isinstance(type_id, int):
            return None
        if kind == "Sequence" and spec.get("id") in ("A", "B"):
            pieces.append((spec["id"], type_id))
        elif kind == "SpecialToken" and isinstance(specials.get(spec.get("id")), dict):
            ids = specials[spec["id"]].get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                return None
            pieces.append((tuple(ids), type_id))
        else:
            return None
    if sorted(p for p, _ in pieces if isinstance(p, str)) != ["A", "B"]:
        return None
    return tuple(pieces)


def encode_pairs(text_ids: Callable[[str, str, int | None], list[int]], pair: tuple[PairPiece, ...] | None,
                 max_length: int | None, pairs: Sequence[tuple[str, str]],
                 source: str) -> list[tuple[list[int], list[int]]]:
    """Each (first, second) text pair -> (ids, token type ids) by the `pair` template, truncated 'longest_first'
    to `max_length` ids in all as `tokenizers` does (tokenizer/mod.rs post_process takes the template's specials
    out of the budget; utils/truncation.rs truncate_encodings splits the rest): what
    `tokenizers.Tokenizer.encode_batch(pairs)` gives. Shared by votive's tokenizers.

    Args:
        text_ids: the tokenizer's `(text, where, keep) -> ids of the text alone`, at most `keep` of them (None:
            all), raising InputError naming `where` for a text that is not a str or not Unicode.
        pair: the post-processor's pair template (`pair_template`), or None when it has none.
        max_length: the longest result, special tokens included; None: no truncation.
        source: named in error messages.

    Raises:
        ModelConfigError: there is no pair template, or max_length leaves no room for its specials.
    """
    if pair is None:
        raise ModelConfigError(f"{source}: its post_processor has no pair template votive reads, so it cannot "
                               "encode (query, document) pairs")
    n_special = sum(len(piece) for piece, _ in pair if not isinstance(piece, str))
    if max_length is not None and max_length < n_special:
        raise ModelConfigError(f"{source}: max_length {max_length} leaves no room for the pair template's "
                               f"{n_special} special tokens")
    keep = None if max_length is None else max_length - n_special  # ids of the two texts together
    cap = None if keep is None else keep + 1  # past the budget, only how two long texts compare still counts
    out, known = [], {}  # known: the same first text (a query against many documents) is tokenized once
    for i, (first, second) in enumerate(pairs):
        a = known.get(first) if isinstance(first, str) else None
        if a is None:
            a = text_ids(first, f"pair {i}, first text", cap)
            known[first] = a
        b = text_ids(second, f"pair {i}, second text", cap)
        if keep is not None and len(a) > keep and len(b) > keep and keep % 2:
            # both were cut at keep + 1 ids, but with an odd budget the longer keeps the odd id: which is longer?
            a, b = text_ids(first, f"pair {i}, first text", None), text_ids(second, f"pair {i}, second text", None)
        n_a, n_b = (len(a), len(b)) if keep is None else longest_first(len(a), len(b), keep)
        parts = {"A": a[:n_a], "B": b[:n_b]}
        ids, types = [], []
        for piece, type_id in pair:
            piece_ids = parts[piece] if isinstance(piece, str) else piece
            ids += piece_ids
            types += [type_id] * len(piece_ids)
        out.append((ids, types))
    return out


def longest_first(n1: int, n2: int, max_length: int) -> tuple[int, int]:
    """How many ids of each text a pair keeps under `max_length` (the pair template's specials already taken
    out), by tokenizers' 'longest_first' (utils/truncation.rs, truncate_encodings): a pair that fits is kept
    whole; else the shorter text is kept whole if it takes at most half, the longer filling the rest; else each
    gets half, the longer one the odd id (the second one when they are as long). A zero budget empties both.

    Example:
        >>> longest_first(2, 8, 7), longest_first(4, 4, 7), longest_first(8, 8, 7)
        ((2, 5), (3, 4), (3, 4))
    """
    if max_length == 0:
        return 0, 0
    if n1 + n2 <= max_length:
        return n1, n2
    short = min(n1, n2)
    long_ = short if short > max_length else max(short, max_length - short)
    if short + long_ > max_length:
        short, long_ = max_length // 2, max_length // 2 + max_length % 2
    return (long_, short) if n1 > n2 else (short, long_)


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
