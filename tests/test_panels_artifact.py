"""Float matrices packed once (issue 15): the numpy backend multiplies a BERT encoder's float matrices from panels
(64 rows of W transposed each, csrc/dense_kernels.c), packed at load (numpy_linears.DensePanels.make) or stored so
by `votive convert FOLDER --to OUT --type panels` (votive.builders.bert_folders.convert_bert_panels) and read in
place. Either way each output is `kernels.linear`'s of the matrix as stored, bit for bit (tests/test_kernels.py
holds that product to its chain of multiply-adds), so the embeddings are the same from the folder, the converted
folder and per-op, alone or in a batch. Folders votive cannot read exactly are refused, naming what is wrong. No
timing is asserted (benchmarks/cold_start_bench.py --stacks votive,votive-panels,ort measures the load)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_int8_artifact import convert_leaving_source

import votive
from votive.backends.numpy_linears import DensePanels
from votive.builders.bert_folders import convert_bert_panels
from votive.cli import main
from votive.errors import InputError, ModelConfigError
from votive.formats.safetensors import SafetensorsFile
from votive.formats.safetensors_write import write_safetensors
from votive.formats.weights import WeightStore
from votive.models import bert
from votive.quant import kernels

needs_c = pytest.mark.skipif(not kernels.available(), reason="votive's C library is not built here")


@pytest.fixture(scope="module")
def converted(minilm_dir, tmp_path_factory) -> Path:
    if not kernels.available():
        pytest.skip("votive's C library is not built here")
    return convert_leaving_source(convert_bert_panels, minilm_dir,
                                  tmp_path_factory.mktemp("panels") / "minilm-panels")


@needs_c
def test_the_panels_folder_embeds_as_the_float_folder_bit_for_bit(converted, minilm_dir, bench_texts):
    stored = votive.load(str(converted), backend="numpy")
    plain = votive.load(str(minilm_dir), backend="numpy")
    assert all(isinstance(layer.w[m], DensePanels) for layer in stored.model.layers for m in bert.MATRICES)
    np.testing.assert_array_equal(stored.embed(bench_texts), plain.embed(bench_texts))
    np.testing.assert_array_equal(stored.embed(bench_texts[:1]), plain.embed(bench_texts[:1]))
    # the per-op path (the C pass's slow twin) from the same panels
    stored.model.whole = None
    np.testing.assert_array_equal(stored.embed(bench_texts[:7]), plain.embed(bench_texts[:7]))


@needs_c
def test_the_folder_holds_each_matrix_as_panels_and_every_other_tensor_as_stored(converted, minilm_dir):
    weights = SafetensorsFile(converted / "model.safetensors")
    source = WeightStore(minilm_dir)
    matrices = {bert.LAYER_WEIGHTS[m].format(i=i) for m in bert.MATRICES for i in range(6)}
    assert set(weights.info) == set(source.keys())
    for name in matrices:
        w = source.get(name)
        out, k = w.shape
        assert weights.info[name].dtype == "F32" and weights[name].shape == (-(-out // 64), k, 64)
        # panel p, row i, column j holds W[64 p + j, i]
        np.testing.assert_array_equal(weights[name].transpose(0, 2, 1).reshape(-1, k)[:out], w)
    for name in set(source.keys()) - matrices:
        np.testing.assert_array_equal(weights[name], source.raw(name))
    config = json.loads((converted / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == bert.PANELS_METHOD


@needs_c
def test_a_matrix_of_rows_not_whole_panels_round_trips(rng=np.random.default_rng(5)):
    w = rng.standard_normal((70, 33)).astype(np.float32)
    lin = DensePanels.make(w)
    again = DensePanels.stored(lin.panels.reshape(2, 33, 64), (70, 33))
    x = rng.standard_normal((5, 33)).astype(np.float32)
    np.testing.assert_array_equal(again(x), kernels.linear(x, w))


def test_without_the_c_library_stored_panels_are_the_matrix_again(monkeypatch, rng=np.random.default_rng(6)):
    w = rng.standard_normal((70, 33)).astype(np.float32)
    panels = np.zeros((2, 33, 64), np.float32)
    panels[:] = np.concatenate([w, np.zeros((58, 33), np.float32)]).reshape(2, 64, 33).transpose(0, 2, 1)
    monkeypatch.setattr(kernels, "_default", [None])
    np.testing.assert_array_equal(DensePanels.stored(panels, (70, 33)), w)
    assert DensePanels.make(w) is w  # and a float matrix stays as it is


@needs_c
def test_the_cli_converts_and_refuses_what_it_cannot_read(converted, minilm_dir, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["convert", str(minilm_dir), "--to", str(out), "--type", "panels"]) == 0
    assert "bert, panels: 36 matrices" in capsys.readouterr().err
    assert main(["convert", str(minilm_dir), "--to", str(out), "--type", "panels"]) == 2  # exists: not replaced
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(converted), "--to", str(tmp_path / "twice"), "--type", "panels"]) != 0
    assert "already quantized" in capsys.readouterr().err
    with pytest.raises(InputError, match="stored as panels .*quantize='int8' needs the float weights"):
        votive.load(str(converted), backend="numpy", quantize="int8")


@needs_c
def test_a_panels_folder_with_a_malformed_matrix_is_refused(converted, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in converted.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "1_Pooling").mkdir()
    for f in (converted / "1_Pooling").iterdir():
        (bad / "1_Pooling" / f.name).write_bytes(f.read_bytes())
    weights = SafetensorsFile(converted / "model.safetensors")
    tensors = {name: weights[name] for name in weights.info}
    name = bert.LAYER_WEIGHTS["w_up"].format(i=2)
    tensors[name] = tensors[name][:, :, :32].copy()  # half of each panel's columns
    write_safetensors(bad / "model.safetensors", tensors)
    with pytest.raises(ModelConfigError, match=f"matrix {name!r} of shape \\(1536, 384\\) stored as panels needs F32 "
                                               "of shape \\(24, 384, 64\\)"):
        votive.load(str(bad), backend="numpy")


@needs_c
def test_build_lambda_quantize_panels_packs_the_converted_folder(minilm_dir, converted, tmp_path):
    import zipfile

    from test_build_quantize import _with_merges, hf_folders
    from test_packaging_units import FakeToolchain

    from votive.builders.lambda_build import LambdaTarget, build_lambda

    for arch in ("x86_64", "arm64"):  # panels are the same floats on every ISA
        out = tmp_path / arch
        result = build_lambda(str(minilm_dir), out, LambdaTarget(python="3.11", arch=arch, quantize="panels"),
                              tools=FakeToolchain().tools())
        quantized = result.manifest["weights"]["quantized"]
        assert quantized["type"] == "panels" and quantized["architecture"] == "bert"
        (model_zip,) = out.glob("votive-model-*.zip")
        with zipfile.ZipFile(model_zip) as zf:
            zf.extractall(tmp_path / f"unzipped-{arch}")
        (weights,) = (tmp_path / f"unzipped-{arch}").rglob("model.safetensors")
        assert weights.read_bytes() == (converted / "model.safetensors").read_bytes()
    # without --quantize a float BERT folder is packed as panels all the same; a converted folder as it is
    plain = build_lambda(str(minilm_dir), tmp_path / "plain", LambdaTarget(python="3.11"),
                         tools=FakeToolchain().tools())
    assert plain.manifest["weights"]["quantized"]["type"] == "panels"
    stored = build_lambda(str(converted), tmp_path / "stored", LambdaTarget(python="3.11"),
                          tools=FakeToolchain().tools())
    assert stored.manifest["weights"].get("quantized") is None
    decoder = _with_merges(hf_folders.SPECS["qwen3"], tmp_path / "qwen3")
    with pytest.raises(InputError, match="--quantize panels: .* is not a BERT encoder"):
        build_lambda(str(decoder), tmp_path / "out2", LambdaTarget(quantize="panels"), tools=FakeToolchain().tools())
