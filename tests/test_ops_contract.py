"""The op set's written contract (votive/backends/ops.py) against the backends that keep it and the models that use it.

Both backends must offer every member of `OpSet` with the same parameters (names, kinds, defaults), so that a
model calls either the same way; their linears must take the calls of `Linear` (and the GPU's the fusion hook of
`FusableLinear`); and `OpSet` must be exactly what the models call on `ops`, read from their source, so that the
contract neither misses an op nor keeps a dead one. The cupy backend module is imported for real, through a
stand-in cupy made of numpy that reports one device: importing it runs no kernel, so no GPU and no emulator are
needed to check its names (the kernels themselves are tests/test_cuda_kernels.py's).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from votive.backends import cuda_linears, numpy_backend, numpy_linears, ops
from votive.formats.gguf import GGUFFile
from votive.testing.synthetic import DecoderShape, write_decoder_gguf

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "votive" / "models"

# cupy as far as importing cupy_backend goes: numpy's array API, one device of compute capability 8.0.
STANDIN_CUPY = '''
import numpy as _np
from numpy import *  # noqa: F401,F403 (the array API cupy mirrors)

asnumpy = _np.asarray


class cuda:
    class runtime:
        @staticmethod
        def getDeviceCount():
            return 1

    class Device:
        compute_capability = "80"
'''


def parameters(fn) -> list[tuple]:
    """(name, kind, default) of each parameter of `fn`: what decides how a caller may call it."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def contract(protocol) -> tuple[dict[str, list[tuple]], set[str]]:
    """(method -> its parameters after self / cls, data members) of a Protocol of votive.backends.ops, with those
    of the ops Protocols it extends."""
    methods, data = {}, set()
    for klass in reversed(protocol.__mro__):
        if klass.__module__ != ops.__name__:  # Protocol, Generic, object
            continue
        data |= set(vars(klass).get("__annotations__", {}))
        for name, member in vars(klass).items():
            fn = member.__func__ if isinstance(member, classmethod) else member
            if inspect.isfunction(fn) and (name == "__call__" or not name.startswith("_")):
                methods[name] = parameters(fn)[1:]
    return methods, data


def calls_on_ops() -> dict[str, list[str]]:
    """name -> ["file:line", ...] for every `ops.<name>` and `<anything>.ops.<name>` in votive/models/*.py."""
    found: dict[str, list[str]] = {}
    for path in sorted(MODELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute):
                holder = node.value
                if (isinstance(holder, ast.Name) and holder.id == "ops") or (
                        isinstance(holder, ast.Attribute) and holder.attr == "ops"):
                    found.setdefault(node.attr, []).append(f"{path.name}:{node.lineno}")
    return found


def check_backend(backend, name: str) -> None:
    """Every member of OpSet on `backend`, each op taking the parameters the contract gives it."""
    methods, data = contract(ops.OpSet)
    missing = sorted(m for m in (*methods, *data) if not hasattr(backend, m))
    assert not missing, f"{backend.__name__} lacks {missing} of votive.backends.ops.OpSet"
    for op, want in methods.items():
        fn = getattr(backend, op)
        assert callable(fn), f"{backend.__name__}.{op} is {type(fn).__name__}, not an op"
        assert parameters(fn) == want, f"{backend.__name__}.{op}{inspect.signature(fn)} is not OpSet.{op}'s {want}"
    assert backend.name == name
    assert np.dtype(backend.float32) == np.float32 and np.dtype(backend.int64) == np.int64
    assert isinstance(backend, ops.OpSet)


@pytest.fixture
def cupy_backend(tmp_path, monkeypatch):
    """votive.backends.cupy_backend over STANDIN_CUPY, imported fresh and forgotten afterwards."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(STANDIN_CUPY)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cupy", "votive.backends.cupy_backend"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("votive.backends.cupy_backend")
    for name in ("cupy", "votive.backends.cupy_backend"):
        sys.modules.pop(name, None)


# ----------------------------------------------------------------------------------------------- the op set


def test_the_contract_is_exactly_what_models_call():
    used = calls_on_ops()
    assert {"make_linear", "rms_norm", "causal_attention", "layer_norm", "float32"} <= set(used), sorted(used)
    methods, data = contract(ops.OpSet)
    members = set(methods) | data
    missing = {name: where for name, where in used.items() if name not in members}
    assert not missing, f"models call ops that votive.backends.ops.OpSet does not name: {missing}"
    unused = sorted(members - set(used))
    assert not unused, f"votive.backends.ops.OpSet names ops that no model calls: {unused}"


def test_the_numpy_backend_keeps_the_contract():
    check_backend(numpy_backend, "numpy")
    methods, _ = contract(ops.OpSet)
    offered = {name for name, fn in vars(numpy_backend).items()
               if inspect.isfunction(fn) and fn.__module__ == numpy_backend.__name__ and not name.startswith("_")}
    assert offered == set(methods), f"ops outside the contract: {sorted(offered - set(methods))}"


def test_the_cupy_backend_keeps_the_contract(cupy_backend):
    check_backend(cupy_backend, "cupy")
    assert cupy_backend.float32 is np.float32  # the stand-in's, which is numpy's: the fixture did take effect


def test_a_backend_that_breaks_the_contract_is_named():
    """The check itself: a missing op and a renamed parameter are each reported."""
    methods, _ = contract(ops.OpSet)
    lacking = types.ModuleType("lacking")  # a module like the backends, one op short
    vars(lacking).update({name: getattr(numpy_backend, name) for name in ("name", "float32", "int64", *methods)})
    del lacking.rope
    with pytest.raises(AssertionError, match=r"lacking lacks \['rope'\] of votive.backends.ops.OpSet"):
        check_backend(lacking, "numpy")
    lacking.rope = lambda x, table, neo: x
    with pytest.raises(AssertionError, match=r"lacking.rope\(x, table, neo\) is not OpSet.rope's"):
        check_backend(lacking, "numpy")


# -------------------------------------------------------------------------------------------------- linears


@pytest.mark.parametrize("cls", [numpy_linears.DenseLinear, numpy_linears.QuantLinear, cuda_linears.GpuDenseLinear,
                                 cuda_linears.GpuQuantLinear])
def test_linears_take_the_calls_of_the_contract(cls):
    methods, _ = contract(ops.Linear)
    for name, want in methods.items():
        assert parameters(getattr(cls, name))[1:] == want, f"{cls.__name__}.{name}"


def test_the_gpu_quantized_linear_offers_the_fusion_hook():
    hook = inspect.getattr_static(cuda_linears.GpuQuantLinear, "fused")
    assert isinstance(hook, classmethod)
    methods, _ = contract(ops.FusableLinear)
    assert parameters(cuda_linears.GpuQuantLinear.fused) == methods["fused"]
    assert [p[0] for p in parameters(cuda_linears.FusedProduct.__call__)] == ["self", "x"]


def test_make_linear_gives_contract_linears_on_both_backends(tmp_path, cupy_backend):
    shape = DecoderShape()  # dim 64, ffn 128: whole Q8_0 blocks
    f = GGUFFile(write_decoder_gguf(tmp_path / "m.gguf", shape, "Q8_0", embed_type="F32", seed=1))
    x = np.random.default_rng(0).standard_normal((3, shape.dim)).astype(np.float32)
    ids = [5, 0, 299]
    kinds = {numpy_backend: (numpy_linears.DenseLinear, numpy_linears.QuantLinear),
             cupy_backend: (cuda_linears.GpuDenseLinear, cuda_linears.GpuQuantLinear)}
    for backend, (dense, quant) in kinds.items():
        embed = backend.make_linear(f, "token_embd.weight")  # F32 (vocab, dim)
        up = backend.make_linear(f, "blk.0.ffn_up.weight")  # Q8_0 (ffn, dim)
        assert type(embed) is dense and type(up) is quant and isinstance(up, ops.Linear)
        rows = backend.to_numpy(embed.rows(ids))  # (3, dim)
        assert rows.shape == (3, shape.dim) and rows.dtype == np.float32
        np.testing.assert_array_equal(rows, f["token_embd.weight"][ids])
        y = backend.to_numpy(embed(backend.asarray(x)))  # (3, vocab)
        assert y.shape == (3, shape.vocab) and y.dtype == np.float32
    assert isinstance(cupy_backend.make_linear(f, "blk.1.attn_q.weight"), ops.FusableLinear)
    y = numpy_backend.make_linear(f, "blk.0.ffn_up.weight")(x)  # the C product (or its numpy twin)
    assert y.shape == (3, shape.ffn_dim) and y.dtype == np.float32
