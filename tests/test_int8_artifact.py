"""The stored int8 encoder (issue 15): `votive convert FOLDER --to OUT --type int8` writes a BERT folder whose
layers' matrices are stored as the int8 kernel reads them (quants in its layout, a float32 scale and a quant sum
per row: votive.builders.bert_folders), and loading it gives `votive.load(FOLDER, quantize="int8")`'s embeddings
bit for bit, from a file a third smaller (MiniLM: the layers' 43 MB of floats become 11 MB). `votive build lambda FOLDER --quantize int8` packs that folder. Folders
votive cannot run exactly are refused, naming what is missing. No timing is asserted (the cold starts are in
benchmarks/embedding_ab.py's output)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_build_quantize import _with_merges, hf_folders
from test_packaging_units import FakeToolchain

import votive
from votive.builders.bert_folders import convert_bert_int8
from votive.builders.lambda_build import LambdaTarget, build_lambda
from votive.cli import main
from votive.errors import InputError, ModelConfigError
from votive.formats.safetensors import SafetensorsFile
from votive.formats.safetensors_write import write_safetensors
from votive.formats.weights import WeightStore
from votive.backends.numpy_linears import EncoderI8Linear, unpack_i8
from votive.models import bert


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def convert_leaving_source(convert, folder: Path, out: Path) -> Path:
    """`convert(folder, out)`'s folder, checking that the user's folder is left as it was."""
    before = _digest(folder)
    done = convert(folder, out).path
    assert _digest(folder) == before
    return done


@pytest.fixture(scope="module")
def converted(minilm_dir, tmp_path_factory) -> Path:
    return convert_leaving_source(convert_bert_int8, minilm_dir, tmp_path_factory.mktemp("int8") / "minilm-int8")


def test_the_stored_int8_model_embeds_as_load_time_int8_bit_for_bit(converted, minilm_dir, bench_texts):
    stored = votive.load(str(converted), backend="numpy")
    at_load = votive.load(str(minilm_dir), backend="numpy", quantize="int8")
    np.testing.assert_array_equal(stored.embed(bench_texts), at_load.embed(bench_texts))
    # quantize="int8" on the stored model asks for what it already is
    again = votive.load(str(converted), backend="numpy", quantize="int8")
    np.testing.assert_array_equal(again.embed(bench_texts[:3]), at_load.embed(bench_texts[:3]))
    # and it is still close to the float model (issue 15: cosine >= 0.99)
    fp32 = votive.load(str(minilm_dir), backend="numpy").embed(bench_texts)
    got = stored.embed(bench_texts)
    cos = (got * fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() >= 0.99


def test_the_folder_holds_the_int8_kernels_arrays_and_every_other_file(converted, minilm_dir):
    weights = SafetensorsFile(converted / "model.safetensors")
    source = WeightStore(minilm_dir)
    matrices = {bert.LAYER_WEIGHTS[m].format(i=i) for m in bert.MATRICES for i in range(6)}
    assert set(weights.info) == set(source.keys()) | {m + p for m in matrices for p in ("_scale", "_sum")}
    for name in matrices:
        packed, scales, sums = weights[name], weights[name + "_scale"], weights[name + "_sum"]
        w = source.get(name)
        out, k = w.shape
        assert weights.info[name].dtype == "I8" and packed.shape == (out // 16, k // 4, 16, 4)
        quants = unpack_i8(packed, out, k)
        np.testing.assert_array_equal(scales, np.abs(w).max(axis=1) / np.float32(127))
        np.testing.assert_array_equal(sums, quants.sum(axis=1, dtype=np.int32))
        assert np.abs(quants.astype(np.float32) * scales[:, None] - w).max() <= scales.max() / 2 * 1.0001
        assert weights.info[name + "_sum"].dtype == "I32" and weights.info[name + "_scale"].dtype == "F32"
    for name in set(source.keys()) - matrices:  # tables, norms, biases: as stored
        np.testing.assert_array_equal(weights[name], source.raw(name))
    config = json.loads((converted / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == bert.INT8_METHOD
    assert {k: v for k, v in config.items() if k != "quantization_config"} == \
        json.loads((minilm_dir / "config.json").read_text())
    others = {n for n in _digest(minilm_dir) if not n.endswith(".safetensors") and n != "config.json"
              and not n.startswith(".")}
    assert others <= set(_digest(converted)) and others
    assert all((converted / n).read_bytes() == (minilm_dir / n).read_bytes() for n in others)
    float_bytes = (minilm_dir / "model.safetensors").stat().st_size
    assert (converted / "model.safetensors").stat().st_size < 0.7 * float_bytes


def test_cli_converts_and_refuses_to_overwrite_without_force(minilm_dir, tmp_path, capsys):
    out = tmp_path / "m8"
    assert main(["convert", str(minilm_dir), "--to", str(out), "--type", "int8"]) == 0
    assert "int8: 36 matrices" in capsys.readouterr().err
    marker = out / "mine.txt"
    marker.write_text("kept")
    code = main(["convert", str(minilm_dir), "--to", str(out), "--type", "int8"])
    err = capsys.readouterr().err
    assert code != 0 and "already exists; pass --force" in err and len(err.strip().splitlines()) == 1
    assert marker.read_text() == "kept"
    assert main(["convert", str(minilm_dir), "--to", str(out), "--type", "int8", "--force"]) == 0
    assert not marker.exists() and (out / "model.safetensors").is_file()


def test_what_cannot_be_converted_or_run_exactly_is_refused(converted, minilm_dir, tmp_path):
    with pytest.raises(InputError, match="no config.json there"):
        convert_bert_int8(tmp_path / "nowhere", tmp_path / "y")
    with pytest.raises(InputError, match="must be outside"):
        convert_bert_int8(minilm_dir, minilm_dir / "inside")
    with pytest.raises(ModelConfigError, match="already quantized"):
        convert_bert_int8(converted, tmp_path / "twice")
    not_bert = tmp_path / "not-bert"
    not_bert.mkdir()
    (not_bert / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelConfigError, match="converts BERT encoder folders"):
        convert_bert_int8(not_bert, tmp_path / "x")
    # the float weights are gone: another quantization cannot be made exactly
    with pytest.raises(InputError, match="stored as int8.*needs the float weights"):
        votive.load(str(converted), backend="numpy", quantize="q8_0")
    # a matrix without its scales, and another tool's quantization
    broken = tmp_path / "broken"
    shutil.copytree(converted, broken)
    f = SafetensorsFile(converted / "model.safetensors")
    tensors = {n: f[n] for n in f.info if n != "encoder.layer.3.output.dense.weight_scale"}
    write_safetensors(broken / "model.safetensors", tensors, overwrite=True,
                      dtypes={n: f.info[n].dtype for n in tensors})
    with pytest.raises(ModelConfigError, match=r"'encoder.layer.3.output.dense.weight'.*needs "
                                               r"'encoder.layer.3.output.dense.weight_scale', F32 of shape \(384,\)"):
        votive.load(str(broken), backend="numpy")
    other = tmp_path / "other"
    shutil.copytree(converted, other)
    config = json.loads((other / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "compressed-tensors"}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="'compressed-tensors' is not a layout votive runs"):
        votive.load(str(other), backend="numpy")


def test_build_lambda_quantize_int8_packs_the_converted_folder(minilm_dir, converted, tmp_path):
    result = build_lambda(str(minilm_dir), tmp_path / "out", LambdaTarget(python="3.11", quantize="int8"),
                          tools=FakeToolchain().tools())
    quantized = result.manifest["weights"]["quantized"]
    assert quantized["type"] == "int8" and quantized["architecture"] == "bert"
    assert quantized["to"]["safetensors_bytes"] == (converted / "model.safetensors").stat().st_size
    assert quantized["to"]["bytes"] < quantized["from"]["bytes"]
    (model_zip,) = (tmp_path / "out").glob("votive-model-*.zip")
    with zipfile.ZipFile(model_zip) as zf:
        zf.extractall(tmp_path / "unzipped")
    (weights,) = (tmp_path / "unzipped").rglob("model.safetensors")
    assert weights.read_bytes() == (converted / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match="--quantize int8 runs on x86_64's AVX512-VNNI; on arm64"):
        build_lambda(str(minilm_dir), tmp_path / "arm", LambdaTarget(arch="arm64", quantize="int8"),
                     tools=FakeToolchain().tools())
    assert not (tmp_path / "arm").exists()
    decoder = _with_merges(hf_folders.SPECS["qwen3"], tmp_path / "qwen3")
    with pytest.raises(InputError, match="--quantize int8: .* is not a BERT encoder"):
        build_lambda(str(decoder), tmp_path / "out2", LambdaTarget(quantize="int8"), tools=FakeToolchain().tools())


@pytest.mark.parametrize("n, k", [(48, 32), (37, 13), (5, 3)])
def test_a_linear_from_stored_arrays_multiplies_as_the_one_made_at_load(n, k):
    """from_packed takes the arrays an EncoderI8Linear made of a float weight (what the converter stores), odd
    shapes included (rows and columns padded in the packing), and gives its products bit for bit."""
    rng = np.random.default_rng(n * 100 + k)
    made = EncoderI8Linear(rng.standard_normal((n, k)).astype(np.float32), "w")
    stored = EncoderI8Linear.from_packed((n, k), made.packed, made.scales, made.sums, "w")
    x = rng.standard_normal((7, k)).astype(np.float32)
    np.testing.assert_array_equal(stored(x), made(x))
    np.testing.assert_array_equal(stored.quants, made.quants)
