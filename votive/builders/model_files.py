"""Which model files a build packs, and which handler serves the model.

Only the files a votive model reads go into an artifact, as `choose_files` picks them from a model folder
(config, tokenizer, safetensors weights, sentence-transformers module settings; no PyTorch/ONNX exports, READMEs
or images). A GGUF file goes alone: it carries its tokenizer and settings.

With `--quantize` (`quantize_model`), a Hugging Face decoder folder is converted to one GGUF file in the build's
work area (votive.builders.gguf_convert) and that file is packed in place of the folder's weights and tokenizer
files: the GGUF carries the tokenizer and chat template. A BERT encoder folder becomes llama.cpp's `bert` GGUF
(votive.builders.gguf_convert_bert: WordPiece vocabulary and pooling type inside), served by the embeddings
handler; with `--quantize int8` it stays a folder, its layers' matrices int8 with one scale per row
(votive.builders.bert_folders), what `quantize="int8"` would make of it at every load.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from votive.errors import InputError, ModelSourceError, PackagingError
from votive.models.hf_checkpoint import ENCODER_INT8 as INT8

# --quantize's other folder layout for a BERT encoder: its float32 matrices stored as the panels votive's float
# product reads (votive.builders.bert_folders.convert_bert_panels), so a cold start packs nothing.
PANELS = "panels"
FOLDER_TYPES = (INT8, PANELS)
from votive.sources import SHARD_INDEX, choose_files, resolve_source, shards_named_by


@dataclass(frozen=True)
class ModelKind:
    """What serves a family of models on a function."""

    name: str
    handler: str  # module.function of the Lambda handler
    unused_requirements: dict[str, str]  # votive dependencies this kind never imports, with the reason
    unused_files: tuple[tuple[str, str], ...]  # slimming rules (see votive.builders.slim) for this kind only
    timeout_s: int  # suggested function timeout


MODEL_KINDS: dict[str, ModelKind] = {
    "encoder": ModelKind("encoder", "votive.handlers.embeddings.handler",
                         {"jinja2": "renders chat templates; an embedding model has none"},
                         (("numpy/random/*", "random numbers: only decoders sample"),), 30),
    "decoder": ModelKind("decoder", "votive.handlers.generation.handler", {}, (), 300),
    "reranker": ModelKind("reranker", "votive.handlers.rerank.handler",
                          {"jinja2": "renders chat templates; a reranker has none"},
                          (("numpy/random/*", "random numbers: only decoders sample"),), 30),
}
# ResolvedSource.kind of a Hugging Face folder -> the MODEL_KINDS entry that serves it (any other: "encoder")
FOLDER_KINDS = {"generation": "decoder", "rerank": "reranker"}
# The same for a GGUF file (any other: "decoder"): an encoder's GGUF (llama.cpp `bert`) embeds.
GGUF_KINDS = {"embeddings": "encoder"}

# GGUF vocabularies (tokenizer.ggml.model) that votive.text.gguf_tokenizer runs on the `tokenizers` library; the
# others it runs itself.
GGUF_VOCABULARIES_ON_TOKENIZERS = {"gpt2": "byte-level BPE merges run by tokenizers' BPE model"}


@dataclass(frozen=True)
class ModelFiles:
    """The model as a build packs it."""

    source: str  # what the user named
    model_id: str
    kind: ModelKind
    files: tuple[tuple[str, Path], ...]  # (name in the model folder, local file), sorted by name
    weights: str  # for a single-file model, its name ("model.gguf"); "" when the model is the folder itself
    extras: dict[str, str] = field(default_factory=dict)  # votive extras serving it needs, with the reason
    tokenizer_note: str = ""  # how its tokenizer runs, when that needs no extra

    @property
    def unused_requirements(self) -> dict[str, str]:
        """votive requirements a build leaves out for this model: its kind's, and `tokenizers` when votive runs
        the model's tokenizer itself."""
        unused = dict(self.kind.unused_requirements)
        if "tokenizers" not in self.extras:
            unused["tokenizers"] = self.tokenizer_note or "the model needs no tokenizer library"
        return unused

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for _, path in self.files)

    @property
    def folder_name(self) -> str:
        """The name of the folder the model is deployed in: the last part of its id, 'all-MiniLM-L6-v2'. The
        handler's /health reports a model by its folder's name, so the folder keeps the model's."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.model_id.rpartition("/")[2]).strip("-.") or "model"

    @property
    def entry(self) -> str:
        """What VOTIVE_MODEL names, relative to the models folder: the model's folder, or its single file."""
        return self.weights or self.folder_name

    @property
    def layout(self) -> tuple[tuple[str, Path], ...]:
        """(path relative to the models folder, local file) for every file: the files inside `folder_name`, or
        the single file at the top."""
        prefix = "" if self.weights else self.folder_name + "/"
        return tuple((prefix + name, path) for name, path in self.files)

    def copy_to(self, folder: Path) -> None:
        """Copy `layout` under `folder` (hard links where the filesystem allows: weights are large)."""
        for name, path in self.layout:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)

    @property
    def slug(self) -> str:
        """A short file-name-safe name: 'sentence-transformers-all-minilm-l6-v2'."""
        return re.sub(r"[^a-z0-9._-]+", "-", self.model_id.lower()).strip("-.")[:64] or "model"


def collect_model(source: str, *, resolve=resolve_source) -> ModelFiles:
    """Resolve `source` (any form `votive.load` takes) and list the files to pack.

    Raises:
        ModelSourceError: the source cannot be resolved or holds no usable weights.
        PackagingError: the model is of a kind no handler serves yet.
    """
    resolved = resolve(source)
    path = Path(resolved.path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise PackagingError(f"{path}: a lone .safetensors file has no config or tokenizer to serve it with; "
                                 "name the model folder instead")
        kind, files, weights = MODEL_KINDS[GGUF_KINDS.get(resolved.kind, "decoder")], ((path.name, path),), path.name
    else:
        listing = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        choice = choose_files(listing, where=str(path))
        names = list(choice.files)
        if choice.sharded:
            import json

            names += shards_named_by(json.loads((path / SHARD_INDEX).read_text()), where=str(path / SHARD_INDEX))
        if choice.weights.endswith(".gguf"):
            kind, weights = MODEL_KINDS[GGUF_KINDS.get(resolved.kind, "decoder")], choice.weights
        else:  # a Hugging Face folder: its config.json's architectures say decoder, reranker or encoder
            kind, weights = MODEL_KINDS[FOLDER_KINDS.get(resolved.kind, "encoder")], ""
        files = tuple((name, path / name) for name in sorted(set(names)))
    missing = [str(p) for _, p in files if not p.is_file()]
    if missing:
        raise ModelSourceError(f"model source {source!r}: files missing: {', '.join(missing)}")
    if importlib.util.find_spec(kind.handler.rpartition(".")[0]) is None:
        raise PackagingError(f"{resolved.model_id} is a {kind.name} model, served by {kind.handler}, which this "
                             "votive does not have yet")
    needs, note = tokenizer_library_need(path / weights if weights and path.is_dir() else path)
    extras = {"tokenizers": needs} if needs else {}
    return ModelFiles(str(source), resolved.model_id, kind, files, weights, extras, note)


def check_quantizable(model_files: ModelFiles, type_name: str, arch: str | None = None) -> None:
    """Refuse `--quantize type_name` before any work: a type the converter does not write, a GGUF file (already
    converted), or a model that is neither a Hugging Face decoder folder nor a BERT encoder folder (converted to
    llama.cpp's `bert` GGUF by votive.builders.gguf_convert_bert, f32 / f16 / q8_0, or int8 by
    votive.builders.bert_folders); int8 for an `arch` without AVX512-VNNI (arm64).

    Raises:
        InputError: naming the flag, the model and what is supported.
    """
    from votive.builders.gguf_convert import convert_type

    if type_name == INT8 and arch == "arm64":
        raise InputError("--quantize int8 runs on x86_64's AVX512-VNNI; on arm64 votive would multiply through its "
                         "exact but slow numpy twin: build arm64 without --quantize, or with q8_0")
    if type_name not in FOLDER_TYPES:
        convert_type(type_name, "--quantize")
    if model_files.weights:
        raise InputError(f"--quantize {type_name}: {model_files.model_id} is a GGUF file ({model_files.weights}), "
                         "already converted; --quantize converts a Hugging Face decoder folder: build the file "
                         "without --quantize")
    if model_files.kind.name == "encoder":
        from votive.builders.gguf_convert_bert import UNIFORM_TYPES, is_bert_folder

        folder = dict(model_files.files)["config.json"].parent
        if not is_bert_folder(folder):
            raise InputError(f"--quantize {type_name}: {model_files.model_id} is an encoder model that is not BERT "
                             "(config.json model_type 'bert'); --quantize converts decoder folders (...ForCausalLM) "
                             "and BERT encoders only: build it without --quantize")
        if type_name not in (*UNIFORM_TYPES, *FOLDER_TYPES):
            raise InputError(f"--quantize {type_name}: {model_files.model_id} is a BERT encoder, converted to "
                             f"{', '.join((*UNIFORM_TYPES, *FOLDER_TYPES))} only ({type_name} is a decoder's "
                             "mixture of types)")
    elif type_name == PANELS:
        raise InputError(f"--quantize panels: {model_files.model_id} is not a BERT encoder; panels (float32 matrices "
                         "laid out for votive's product) are for BERT encoders: build it without --quantize")
    elif type_name == INT8:
        raise InputError(f"--quantize int8: {model_files.model_id} is not a BERT encoder; int8 (one scale per row) "
                         "is for BERT embedding encoders: use q8_0, f16, f32 or q4_k_m")
    elif model_files.kind.name != "decoder":
        raise InputError(f"--quantize {type_name}: {model_files.model_id} is an {model_files.kind.name} model; "
                         "--quantize converts Hugging Face decoder folders (...ForCausalLM) and BERT encoders "
                         "only: build it without --quantize")


def quantize_model(model_files: ModelFiles, type_name: str, work: Path) -> tuple[ModelFiles, dict]:
    """Convert the Hugging Face decoder folder of `model_files` into one `type_name` GGUF file under `work` (a
    build's work area; nothing the user gave is written to) and list that file to pack instead.

    Returns:
        (the files to pack: the GGUF alone, under the model's own id and source; what was quantized from what,
        for the manifest).

    Raises:
        InputError: as `check_quantizable`.
        ModelConfigError: an architecture, rope setting, tensor or tokenizer the converter cannot write.
    """
    from votive.builders.gguf_convert import convert_folder

    check_quantizable(model_files, type_name)
    folder = dict(model_files.files)["config.json"].parent  # a Hugging Face folder always has its config.json
    work.mkdir(parents=True, exist_ok=True)
    source = {"files": [name for name, _ in model_files.files], "bytes": model_files.total_bytes}
    if type_name in FOLDER_TYPES:  # a folder again, its matrices int8 or panels (votive.builders.bert_folders)
        from votive.builders.bert_folders import convert_bert_int8, convert_bert_panels

        convert = convert_bert_int8 if type_name == INT8 else convert_bert_panels
        done = convert(folder, work / f"{model_files.folder_name}.{type_name}")
        packed = replace(collect_model(str(done.path)), source=model_files.source, model_id=model_files.model_id)
        return packed, {"type": type_name, "architecture": "bert",
                        "from": {**source, "safetensors_bytes": done.folder_bytes},
                        "to": {"file": f"{len(packed.files)} files", "bytes": packed.total_bytes,
                               "safetensors_bytes": done.weights_bytes},
                        "fallbacks": {}}
    result = convert_folder(folder, work / f"{model_files.folder_name}.{type_name}.gguf", type_name)
    packed = replace(collect_model(str(result.path)), source=model_files.source, model_id=model_files.model_id)
    record = {"type": type_name, "architecture": result.architecture,
              "from": {**source, "safetensors_bytes": result.folder_bytes},
              "to": {"file": result.path.name, "bytes": result.gguf_bytes},
              "fallbacks": dict(result.fallbacks)}  # matrix -> its type, its rows not whole blocks of `type`
    return packed, record


def tokenizer_library_need(model: Path) -> tuple[str | None, str]:
    """(why serving `model` needs the `tokenizers` library, or None; and when not, how its tokenizer runs).

    A model folder's tokenizer.json is asked of votive.text.wordpiece; a GGUF file's vocabulary kind is read
    from its metadata.

    Raises:
        ModelConfigError: the tokenizer.json cannot be read.
        WeightFileError: the GGUF file is malformed.
    """
    if model.suffix == ".gguf":
        from votive.formats.gguf import GGUFFile

        vocabulary = GGUFFile(model).metadata.get("tokenizer.ggml.model")
        if vocabulary in GGUF_VOCABULARIES_ON_TOKENIZERS:
            return (f"its GGUF vocabulary is {vocabulary!r}: {GGUF_VOCABULARIES_ON_TOKENIZERS[vocabulary]}", "")
        runner = "votive.text.gguf_wordpiece" if vocabulary == "bert" else "votive.text.gguf_tokenizer"
        return None, f"its GGUF vocabulary ({vocabulary!r}) is run by {runner}"
    from votive.text.wordpiece import tokenizers_needed_for

    needs = tokenizers_needed_for(model)
    return needs, "" if needs else "its BERT WordPiece tokenizer is run by votive.text.wordpiece"
