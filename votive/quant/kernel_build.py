"""Compile libvotive.so, the C kernel library that `votive.quant.kernels` loads with ctypes.

`setup.py` calls `build_library` during `pip install` (regular and editable); the packaging builders call it
with a cross compiler to build for another architecture, and `build_selftest` to build the C self-test that
checks the result on the target (or under qemu-user). It also runs by hand:

    python -m votive.quant.kernel_build                 # rebuild votive/quant/libvotive.so in place
    python -m votive.quant.kernel_build --cc aarch64-linux-gnu-gcc --out build/arm64/libvotive.so --selftest

This file uses only the standard library and imports nothing from votive: setup.py loads it by path in
pip's isolated build environment, where votive's dependencies are not installed.

Run-time dispatch: `nn_kernels.c`, `dense_kernels.c`, `quant_kernels.c`, `decoder_kernels.c` and `half_kernels.c` are
compiled once
per instruction set in ISA_FLAGS for the target architecture, and dispatch.c picks the best build the CPU supports
when the library is first used, so one x86_64 library runs everywhere and uses AVX2 or AVX-512 where present. On
arm64 NEON is the baseline. The
quantized kernels go one step further inside a build: their int8 dot products are compiled a second time, with
function-level target attributes, for VNNI (x86_64) or the dot-product extension (arm64), used when the CPU
reports it (cpuid, or getauxval's HWCAP_ASIMDDP).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
LIBRARY_NAME = "libvotive.so"
SELFTEST_NAME = "votive-selftest"

COMMON_SOURCES = ("threadpool.c", "dispatch.c", "decode_step.c", "encoder_pass.c", "half_matmul.c",
                  "encoder_q8.c")  # compiled once, for the baseline (encoder_q8.c: its AVX-512 by target attribute)
ISA_SOURCES = ("nn_kernels.c", "dense_kernels.c", "quant_kernels.c", "decoder_kernels.c",
               "half_kernels.c")  # compiled once per entry of ISA_FLAGS[arch]
HEADERS = ("votive.h", "vt_internal.h", "simd.h", "quant_x86.h", "quant_x86_kernels.h", "quant_neon.h",
           "quant_neon_kernels.h", "half.h", "ggml_block_structs.h", "half_kernels.h", "lanes16.h")
# Flags for one source only. The quantized kernels must round exactly as ggml's reference C (no multiply-add
# contracted into an FMA behind their back) and spell out their FMAs as intrinsics.
SOURCE_FLAGS = {"quant_kernels.c": ("-ffp-contract=off",), "decoder_kernels.c": ("-ffp-contract=off", "-O3"),
                "half_kernels.c": ("-ffp-contract=off", "-O3")}

# Per target architecture (as `cc -dumpmachine` names it): each ISA build and its flags. The first needs
# nothing beyond the architecture's baseline. dispatch.c's cpu_runs() tests every feature enabled here.
_AVX2 = ("-mavx2", "-mfma", "-mf16c")
ISA_FLAGS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "x86_64": (
        ("sse2", ()),
        ("avx2", ("-DVT_ISA_AVX2", *_AVX2)),
        ("avx512", ("-DVT_ISA_AVX512", *_AVX2, "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl")),
    ),
    "aarch64": (("neon", ()),),
}
GENERIC_ISA = (("generic", ()),)  # any other architecture: plain C vectors, whatever the compiler makes

# No -ffast-math: the kernels rely on IEEE rounding and NaN rules. -fno-math-errno lets sqrtf inline.
CFLAGS = ("-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-fno-math-errno", "-pthread", "-Wall", "-Wextra")
LDFLAGS = ("-shared", "-pthread", "-Wl,-z,noexecstack")
LIBS = ("-lm",)


class KernelBuildError(RuntimeError):
    """The C compiler is missing or failed; the message says which step and shows its output."""


def default_cc() -> list[str]:
    """The compiler from $CC (it may carry flags, as in 'gcc -m64'), else `cc`."""
    return shlex.split(os.environ.get("CC") or "cc")


def target_arch(cc: list[str], run=subprocess.run) -> str:
    """The architecture the compiler builds for: 'x86_64', 'aarch64', ... from `cc -dumpmachine`."""
    machine = _run([*cc, "-dumpmachine"], "ask the compiler for its target", run).strip()
    return machine.split("-", 1)[0]


def build_library(out: str | Path, *, cc: list[str] | None = None, run=subprocess.run) -> Path:
    """Compile and link libvotive.so into `out`.

    The library is linked under a temporary name and renamed into place, so `out` is never half-written.

    Args:
        out: path of the shared library to write (its folder is created).
        cc: compiler command, e.g. ['aarch64-linux-gnu-gcc'] to cross-compile; default: `default_cc()`.
        run: `subprocess.run` or a stand-in with its signature (tests pass a recorder).

    Returns:
        The path written.

    Raises:
        KernelBuildError: no compiler, or a compile or link step failed.
    """
    cc = list(cc) if cc else default_cc()
    out = Path(out)
    isas = ISA_FLAGS.get(target_arch(cc, run), GENERIC_ISA)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="votive-kernels-") as tmp:
        objects = []
        for source in COMMON_SOURCES:
            objects.append(_compile(cc, source, (), Path(tmp) / f"{Path(source).stem}.o", run))
        for isa, flags in isas:
            for source in ISA_SOURCES:
                objects.append(_compile(cc, source, flags, Path(tmp) / f"{Path(source).stem}_{isa}.o", run))
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            _run([*cc, *LDFLAGS, "-o", str(partial), *map(str, objects), *LIBS], f"link {out.name}", run)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def build_selftest(library: str | Path, out: str | Path | None = None, *, cc: list[str] | None = None,
                   run=subprocess.run) -> Path:
    """Compile selftest.c against an already built library; the program finds it in its own folder.

    Args:
        library: the libvotive.so to test, as built by `build_library` with the same compiler.
        out: the program to write; default: `votive-selftest` beside the library.

    Returns:
        The program's path. Run it on the target; it exits 0 when every check passes.
    """
    cc = list(cc) if cc else default_cc()
    library = Path(library)
    out = Path(out) if out else library.with_name(SELFTEST_NAME)
    if library.name != LIBRARY_NAME:
        raise KernelBuildError(f"build_selftest: the library must be named {LIBRARY_NAME}, found {library.name}")
    if out.parent.resolve() != library.parent.resolve():
        raise KernelBuildError(f"build_selftest: put {out.name} in the library's folder {library.parent}, "
                               f"where it looks for {LIBRARY_NAME}")
    _run([*cc, *CFLAGS, "-o", str(out), str(SOURCE_DIR / "selftest.c"), f"-L{library.parent}", "-lvotive",
          "-Wl,-rpath,$ORIGIN", *LIBS], "compile selftest.c", run)
    return out


def _compile(cc: list[str], source: str, flags: tuple[str, ...], obj: Path, run) -> Path:
    _run([*cc, *CFLAGS, *flags, *SOURCE_FLAGS.get(source, ()), "-c", str(SOURCE_DIR / source), "-o", str(obj)],
         f"compile {source}{' for ' + obj.stem.rsplit('_', 1)[-1] if flags else ''}", run)
    return obj


def _run(args: list[str], step: str, run) -> str:
    try:
        done = run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelBuildError(f"cannot {step}: C compiler {args[0]!r} not found (set CC to another one)") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout or "").strip()
        raise KernelBuildError(f"cannot {step}: {shlex.join(args)} exited with {done.returncode}\n{output}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m votive.quant.kernel_build", description=__doc__.split("\n")[0])
    parser.add_argument("--cc", help="C compiler command (default: $CC, else cc)")
    parser.add_argument("--out", default=str(Path(__file__).with_name(LIBRARY_NAME)),
                        help="library to write (default: beside this module, where votive loads it from)")
    parser.add_argument("--selftest", action="store_true", help=f"also build {SELFTEST_NAME} beside the library")
    args = parser.parse_args(argv)
    cc = shlex.split(args.cc) if args.cc else None
    try:
        library = build_library(args.out, cc=cc)
        print(library)
        if args.selftest:
            print(build_selftest(library, cc=cc))
    except KernelBuildError as exc:
        print(f"votive kernel build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
