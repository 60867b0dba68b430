"""The one table of GGML block layouts (votive/quant/ggml_types.py) and what is derived from it: the generated C and
CUDA block structs, whose compilers assert every size; the CUDA kernel list; the scale offsets of random test
weights. Also the attention kernel's report of a scratch buffer it could not allocate (csrc/dispatch.c)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap

import pytest

from votive.errors import KernelError, QuantError
from votive.quant import cuda_kernels, kernel_build
from votive.quant.ggml_types import GGML_TYPES, GGMLType, block_fields, ggml_type
from votive.testing.synthetic import SCALE_FIELDS

CSRC = kernel_build.SOURCE_DIR


def _generator():
    spec = importlib.util.spec_from_file_location("gen_block_structs", CSRC / "gen_block_structs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
QUANTIZED = [t for t in GGML_TYPES.values() if t.quantized]


# ---------------------------------------------------------------------------------------------------- the table


def test_field_offsets_are_those_of_ggml_common_h():
    """Offsets read by hand off ggml-common.h's structs: where the fields sit after the leading ones."""
    expected = {("Q4_1", "m"): 2, ("Q4_1", "qs"): 4, ("Q5_0", "qh"): 2, ("Q5_0", "qs"): 6, ("Q5_1", "qs"): 8,
                ("Q2_K", "qs"): 16, ("Q2_K", "d"): 80, ("Q2_K", "dmin"): 82, ("Q3_K", "qs"): 32,
                ("Q3_K", "scales"): 96, ("Q3_K", "d"): 108, ("Q4_K", "scales"): 4, ("Q4_K", "qs"): 16,
                ("Q5_K", "qh"): 16, ("Q5_K", "qs"): 48, ("Q6_K", "qh"): 128, ("Q6_K", "scales"): 192,
                ("Q6_K", "d"): 208, ("Q8_K", "bsums"): 260, ("IQ4_XS", "scales_l"): 4, ("IQ4_XS", "qs"): 8,
                ("IQ1_S", "qh"): 34, ("TQ1_0", "d"): 52, ("MXFP4", "qs"): 1, ("NVFP4", "qs"): 4}
    assert {key: ggml_type(key[0]).field(key[1]).offset for key in expected} == expected


def test_every_quantized_type_lists_fields_that_fill_its_block():
    for t in QUANTIZED:
        assert t.fields and sum(f.nbytes for f in t.fields) == t.block_bytes, t.name
        assert [f.offset for f in t.fields] == [sum(g.nbytes for g in t.fields[:i]) for i in range(len(t.fields))]
    assert all(not t.fields for t in GGML_TYPES.values() if not t.quantized)


def test_plain_types_take_their_bytes_from_their_dtype():
    for t in GGML_TYPES.values():
        if not t.quantized:
            assert t.dtype.itemsize == t.block_bytes and t.block_size == 1, t.name


def test_block_fields_refuse_rows_a_c_compiler_would_lay_out_otherwise():
    with pytest.raises(QuantError) as e:
        block_fields("Q9_0", 18, [("d", "half", 1), ("qs", "u8", 17)])
    assert str(e.value) == "Q9_0: the fields add up to 19 bytes, not the 18 of its block"
    with pytest.raises(QuantError) as e:
        block_fields("Q9_0", 5, [("e", "u8", 1), ("d", "f32", 1)])
    assert str(e.value) == "Q9_0.d: a f32 field at byte 1 is not aligned to 4 bytes; C would pad the struct"
    with pytest.raises(QuantError, match=r"^Q9_0\.d: unknown element type 'f16' \(known: half, f32, "):
        block_fields("Q9_0", 2, [("d", "f16", 1)])


def test_field_lookup_names_the_fields_there_are():
    with pytest.raises(QuantError) as e:
        GGMLType.Q4_0.field("m")
    assert str(e.value) == "Q4_0 blocks have no field 'm' (fields: d, qs)"
    with pytest.raises(QuantError) as e:
        GGMLType.F16.field("d")
    assert str(e.value) == "F16 blocks have no field 'd' (fields: none, it is a plain type)"


# ----------------------------------------------------------------------------------------- what reads the table


def test_synthetic_scale_fields_are_the_half_scales_of_the_table():
    assert SCALE_FIELDS["Q2_K"] == ((80, 1.0), (82, 1.5)) and SCALE_FIELDS["Q6_K"] == ((208, 1.0),)
    for name, fields in SCALE_FIELDS.items():
        t = ggml_type(name)
        for offset, _ in fields:
            assert [f.type for f in t.fields if f.offset == offset] == ["half"], (name, offset)


def test_cuda_kernel_list_keeps_its_ids_and_suffixes():
    # The suffixes name the kernels in quant.cu (qmatvec_q4_k, ...) and the cached binaries' manifests.
    assert cuda_kernels.QUANT_FORMATS == {0: "f32", 1: "f16", 30: "bf16", 2: "q4_0", 3: "q4_1", 6: "q5_0",
                                          7: "q5_1", 8: "q8_0", 12: "q4_k", 13: "q5_k", 14: "q6_k"}


def test_cuda_kernel_build_step_still_imports_without_numpy():
    """An image compiles the CUDA kernels before numpy is there (cuda_kernels' docstring); the table must not pull
    it in."""
    code = "import sys; sys.modules['numpy'] = None; import votive.quant.cuda_kernels as c; print(len(c.MODULES))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr


# ---------------------------------------------------------------------------------------- the generated headers


@pytest.mark.parametrize("path", list(gen.OUTPUTS), ids=lambda p: p.name)
def test_checked_in_headers_are_what_the_table_generates(path):
    assert path.read_text() == gen.OUTPUTS[path](), (
        f"{path.name} differs from the GGML type table: run `python votive/quant/csrc/gen_block_structs.py`")


def test_struct_names_follow_ggml_common_h():
    names = {t.name: gen.suffix(t) for t in QUANTIZED}
    assert (names["Q4_0"], names["Q4_K"], names["Q8_K"], names["IQ2_XXS"], names["TQ1_0"], names["MXFP4"]) == (
        "q4_0", "q4_K", "q8_K", "iq2_xxs", "tq1_0", "mxfp4")


def _c_compiler() -> list[str]:
    cc = kernel_build.default_cc()
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no C compiler {cc[0]!r}")
    return cc


def test_c_structs_put_every_field_where_the_table_does(tmp_path):
    """Compile a program that prints sizeof and offsetof of every field of the generated structs, and compare."""
    prints = [f'printf("{t.name} {f.name} %zu %zu\\n", offsetof(block_{gen.suffix(t)}, {f.name}), '
              f"sizeof(block_{gen.suffix(t)}));" for t in QUANTIZED for f in t.fields]
    source = tmp_path / "layout.c"
    source.write_text('#include <stdio.h>\n#include "ggml_block_structs.h"\nint main(void) {\n'
                      + "\n".join(prints) + "\nreturn 0;\n}\n")
    program = tmp_path / "layout"
    subprocess.run([*_c_compiler(), "-std=gnu11", "-Wall", "-Werror", f"-I{CSRC}", str(source), "-o", str(program)],
                   check=True, capture_output=True)
    printed = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split("\n")
    assert printed[:-1] == [f"{t.name} {f.name} {f.offset} {t.block_bytes}" for t in QUANTIZED for f in t.fields]


def _tampered(text: str, suffix: str, old: str, new: str) -> str:
    """The header text with `old` made `new` in the struct of block_<suffix> (which follows its QK_ constant)."""
    at = text.index(old, text.index(f"#define QK_{suffix} "))
    return text[:at] + new + text[at + len(old) :]


def test_c_compiler_refuses_a_struct_of_the_wrong_size(tmp_path):
    """The size assertions are live: a block_q6_K one byte too long does not compile, and the error says which."""
    text = gen.c_header()
    (tmp_path / "ggml_block_structs.h").write_text(_tampered(text, "q6_K", "scales[16]", "scales[17]"))
    (tmp_path / "t.c").write_text('#include "ggml_block_structs.h"\n')
    done = subprocess.run([*_c_compiler(), "-std=gnu11", "-fsyntax-only", f"-I{tmp_path}", str(tmp_path / "t.c")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "block_q6_K is not the 210 bytes of Q6_K in ggml_types.py" in done.stderr


def test_nvrtc_refuses_a_cuda_struct_of_the_wrong_size():
    from votive.quant import nvrtc

    try:
        nv = nvrtc.load()
    except KernelError as err:
        pytest.skip(f"NVRTC cannot be loaded here: {err}")
    headers = {"common.cuh": (cuda_kernels.SOURCE_DIR / "common.cuh").read_text()}
    source = '#include "ggml_block_structs.cuh"\nextern "C" __global__ void nothing() {}\n'
    nv.compile(source, "t.cu", arch="compute_75", headers={**headers, "ggml_block_structs.cuh": gen.cuda_header()},
               options=cuda_kernels.OPTIONS)
    wrong = _tampered(gen.cuda_header(), "q4_K", "qs[128]", "qs[130]")
    with pytest.raises(KernelError, match="block_q4_K is not the 144 bytes of Q4_K in ggml_types.py"):
        nv.compile(source, "t.cu", arch="compute_75", headers={**headers, "ggml_block_structs.cuh": wrong},
                   options=cuda_kernels.OPTIONS)


# ------------------------------------------------------------------------------------------- attention's buffer

# Runs in a child process under an address-space limit that leaves room for everything but attention's scratch
# buffer for two queries (a prompt's: the keys and values widened to floats, about 8 * keys * dims bytes: 1 GiB
# here; one query reads the half cache itself and needs a few rows), so that its malloc in the worker part fails.
# The keys and values are zeros never read: calloc maps them without touching a page.
_ATTENTION_UNDER_A_LIMIT = textwrap.dedent("""
    import resource
    import numpy as np
    from votive.errors import KernelError
    from votive.quant import kernels

    assert kernels.get() is not None, "libvotive.so did not load"
    q = np.ones((1, 1, 64), np.float32)
    small_k, small_v = np.zeros((1, 64, 64), np.float16), np.zeros((1, 64, 64), np.float16)
    kernels.attention_f16(q, small_k, small_v, 63, 0.125)  # the pool and every code path set up before the limit
    keys = 1 << 21
    k, v = np.zeros((1, keys, 64), np.float16), np.zeros((1, 64, keys), np.float16)
    size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        kernels.attention_f16(np.ones((2, 1, 64), np.float32), k, v, keys - 2, 0.125)
        print("returned")
    except KernelError as err:
        print("raised:", err)
    print("small:", float(kernels.attention_f16(q, small_k, small_v, 63, 0.125).sum()))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and sets RLIMIT_AS")
def test_attention_raises_when_its_scratch_buffer_cannot_be_allocated():
    """vt_attention_f16 used to report success with its output unwritten when a worker's malloc failed."""
    done = subprocess.run([sys.executable, "-c", _ATTENTION_UNDER_A_LIMIT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("raised: attention_f16"), done.stdout
    assert lines[1] == "small: 0.0"  # the same call on a cache that fits still runs under the limit
