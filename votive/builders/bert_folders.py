"""`votive convert FOLDER --to OUT --type int8` (or `--type panels`): a BERT encoder folder written again with its
layers' matrices as int8, the artifact of `quantize="int8"` (and what `votive build lambda FOLDER --quantize int8`
packs); or as float32 panels, the layout the float product reads (see `convert_bert_panels`).

`votive.load(folder, quantize="int8")` quantizes the six matrices of each layer at every load, reading the whole
float file (MiniLM: 91 MB) to do it. Here that happens once: each matrix W (out, in) is quantized as that load
does it (votive.backends.numpy_linears.EncoderI8Linear: q = round-half-even(W[n] * 127 / max|W[n]|), scale
max|W[n]| / 127) and stored as the arrays the int8 kernel reads: `<name>` the quants in its layout, I8 (out / 16,
in / 4, 16, 4) rounded up with zeros; `<name>_scale` F32 (out,); `<name>_sum` I32 (out,), each row's quant sum.
A load maps them and multiplies by them in place, computing and copying nothing, so its embeddings are the
load-time int8 model's bit for bit, from a quarter of the layers' bytes. Every other tensor (token, position and
type tables, norms, biases) is kept as stored.

config.json gains `quantization_config: {"quant_method": "votive-int8", ...}` (votive.models.bert.INT8_METHOD):
votive reads the tensors, and transformers and sentence-transformers refuse the folder (an unknown quant_method)
rather than load int8 quants as float weights. Every other file of the folder (tokenizer, modules.json, pooling and
normalize configs, README) is copied; weight files (safetensors, PyTorch, ONNX, ...) are not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from votive.errors import InputError, ModelConfigError

# Files of a model folder that hold weights: the converted safetensors replaces them, the rest is not copied.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".h5", ".msgpack", ".ot",
                   ".tflite", ".gguf", ".ckpt")
WEIGHT_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ConvertedFolder:
    """What `convert_bert_int8` or `convert_bert_panels` wrote."""

    path: Path  # the folder
    folder_bytes: int  # the source folder's safetensors files
    weights_bytes: int  # the written model.safetensors
    matrices: int  # matrices stored as int8 (or panels)


def convert_bert_panels(folder, out, *, overwrite: bool = False) -> ConvertedFolder:
    """Write the BERT encoder in `folder` into the new folder `out` with its matrices as float32 panels: `<name>` F32
    (ceil(out / 64), in, 64), the layout votive.backends.numpy_linears.DensePanels packs a float matrix into at
    every load (~35 ms for MiniLM's 43 MB, with the new pages' faults). A load maps them and multiplies by them in
    place: the same numbers, bit for bit, without that copy, so a cold start is the float model's without it.
    config.json gains `quantization_config: {"quant_method": "votive-panels"}` (votive.models.bert.PANELS_METHOD),
    which transformers refuses rather than read transposed matrices. Arguments and errors as `convert_bert_int8`."""
    import numpy as np

    from votive.backends.numpy_linears import DensePanels

    def panels(name, w):
        if not np.isfinite(w).all():
            raise ModelConfigError(f"{folder}: {name} holds inf or NaN")
        lin = DensePanels.make(w, name)
        if not isinstance(lin, DensePanels):
            raise InputError("--type panels needs votive's C library (votive/quant/libvotive.so), which did not load")
        n, k = w.shape
        return {name: lin.panels.reshape(-(-n // DensePanels.PANEL), k, DensePanels.PANEL)}

    from votive.models import bert

    return _convert(folder, out, "panels", panels, {"quant_method": bert.PANELS_METHOD, "bits": 32,
                    "layout": "per 64 rows of each matrix, transposed: (ceil(out / 64), in, 64), zero past out"},
                    overwrite)


def convert_bert_int8(folder, out, *, overwrite: bool = False) -> ConvertedFolder:
    """Write the BERT encoder in `folder` into the new folder `out` with int8 matrices (see the module docstring).

    Args:
        folder (str or Path): a sentence-transformers / Hugging Face BERT folder (config.json model_type "bert",
            safetensors, tokenizer files).
        out (str or Path): the folder to write; it appears only once complete.
        overwrite (bool): replace an existing `out` (a folder this wrote, or anything there).

    Raises:
        InputError: no config.json in `folder`, `out` exists and overwrite is False, or `out` is `folder` or inside it.
        ModelConfigError: not a BERT folder votive runs, or one already stored as int8.
        WeightFileError: a malformed safetensors file.
    """
    import numpy as np

    from votive.backends.numpy_linears import EncoderI8Linear
    from votive.models import bert

    def int8(name, w):
        lin = EncoderI8Linear(w, name)
        if not np.isfinite(lin.scales).all():
            raise ModelConfigError(f"{folder}: {name} holds inf or NaN; it has no int8 form")
        return {name: lin.packed, name + bert.INT8_SCALE: lin.scales, name + bert.INT8_SUM: lin.sums}

    return _convert(folder, out, "int8", int8, {
        "quant_method": bert.INT8_METHOD, "bits": 8,
        "weights": "per output row, symmetric: scale max|row| / 127, quants round half to even",
        "activations": "per row at run time, the same way"}, overwrite)


def _convert(folder, out, kind: str, matrix_tensors, quantization_config: dict, overwrite: bool) -> ConvertedFolder:
    """The BERT folder `folder` into the new folder `out`, each layer matrix replaced by the tensors
    `matrix_tensors(name, float32 matrix)` returns, config.json's quantization_config set (`kind`: the --type)."""
    from votive.builders.gguf_convert_bert import is_bert_folder
    from votive.formats.safetensors_write import write_safetensors
    from votive.formats.weights import WeightStore
    from votive.models import bert

    folder, out = Path(folder), Path(out)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: no config.json there; --type {kind} converts a BERT encoder folder")
    if not is_bert_folder(folder):
        raise ModelConfigError(f"{folder}: --type {kind} converts BERT encoder folders (config.json model_type "
                               "'bert'); for other models use q8_0, f16 or f32")
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise InputError(f"{out}: the converted folder must be outside {folder}")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    raw_config = json.loads((folder / "config.json").read_bytes())
    if raw_config.get("quantization_config") is not None:
        raise ModelConfigError(f"{folder}: already quantized (config.json has a quantization_config); convert the "
                               "float model")
    cfg = bert.Config.from_json(folder / "config.json")  # refuses what BertModel cannot run, naming the key
    store = WeightStore(folder)
    prefix = bert.checkpoint_prefix(store)
    matrices = {prefix + bert.LAYER_WEIGHTS[m].format(i=i) for m in bert.MATRICES
                for i in range(cfg.num_hidden_layers)}
    missing = sorted(matrices - set(store.keys()))
    if missing:
        raise ModelConfigError(f"{folder}: missing tensor {missing[0]!r} (config says {cfg.num_hidden_layers} layers)")
    tensors, dtypes = {}, {}
    for name in sorted(store.keys()):
        if name in matrices:
            tensors.update(matrix_tensors(name, store.get(name)))
        else:
            tensors[name], dtypes[name] = store.raw(name), store.dtype_of(name)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _copy_other_files(folder, work)
        raw_config["quantization_config"] = {**quantization_config, "modules": sorted(bert.MATRICES)}
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # a folder as any other the user makes (mkdtemp's is private)
        (work / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n")
        written = write_safetensors(work / "model.safetensors", tensors, dtypes=dtypes,
                                    metadata={"format": "pt", "quantization": quantization_config["quant_method"]})
        weights_bytes = written.stat().st_size
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    folder_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return ConvertedFolder(out, folder_bytes, weights_bytes, len(matrices))


def _copy_other_files(folder: Path, to: Path) -> None:
    """Every file of `folder` but its weights and hidden files, subfolders kept (1_Pooling/config.json, ...)."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.name.endswith(WEIGHT_SUFFIXES) or path.name in WEIGHT_NAMES or rel == Path("config.json"):
            continue
        (to / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, to / rel)
