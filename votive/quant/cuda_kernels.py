"""votive's CUDA kernels: which exist, their ahead-of-time compilation, and loading them on a GPU.

The sources are in `cusrc/` (one module per .cu file, see MODULES). A GPU image compiles them while it is built,
on a machine with no GPU, with NVRTC (`votive.quant.nvrtc`):

    python -m votive.quant.cuda_kernels build --out /opt/votive-kernels [--arch 75,80,86,89,90]

which writes a cubin per architecture and one PTX for GPUs newer than all of them, keyed by a hash of the
sources and options:

    DIR/manifest.json                      what was built, by which NVRTC
    DIR/<module>-<key>/sm_80.cubin         key = source_key(module): the module's .cu, every header, the options
    DIR/<module>-<key>/compute_75.ptx

At run time `CupyKernels` looks for the device's binary in $VOTIVE_CUDA_KERNELS, then in the user cache
(~/.cache/votive/cuda-kernels): the exact cubin, else a cubin of the same major architecture and a lower minor
(binary compatible), else the PTX (which the driver compiles). Only when none exists, or none loads, are the
kernels compiled in the process, with a warning, and the result kept in the user cache for the next start.

This module imports only the standard library and votive's errors, GGML type table and NVRTC binding, so the
build step runs in an image that has neither numpy nor a GPU; cupy is imported only by `CupyKernels`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from votive.errors import KernelError
from votive.quant.ggml_types import ggml_type

log = logging.getLogger("votive")

SOURCE_DIR = Path(__file__).resolve().parent / "cusrc"
# Every module may include any of them: all go into every key. ggml_block_structs.cuh is generated from the GGML
# type table (csrc/gen_block_structs.py).
HEADERS = ("common.cuh", "ggml_block_structs.cuh", "ggml_blocks.cuh")
OPTIONS = ("--std=c++17", "-DNDEBUG")
ENV_CACHE = "VOTIVE_CUDA_KERNELS"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "votive-cuda-kernels/1"

# Cubins for: T4 (7.5), A100 (8.0), A10G / RTX 30xx (8.6), L4 / RTX 40xx (8.9), H100 / H200 (9.0). A GPU of a later
# minor version of the same major runs the lower one's cubin (8.7 runs 8.0's); anything newer runs the PTX.
ARCHS = (75, 80, 86, 89, 90)
PTX_ARCH = 75  # the oldest listed: PTX for it runs on every later GPU

# The formats quant.cu implements (a Fmt struct each in ggml_blocks.cuh), as GGML type id -> the suffix of their
# kernels (qmatvec_<suffix>, ...): the type's name in lower case. Ids come from the GGML type table.
QUANT_FORMATS = {ggml_type(name).id: name.lower()
                 for name in ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")}
QUANT_KERNELS = ("qmatvec", "qmatmul", "qget_rows", "qdequant")


@dataclass(frozen=True)
class KernelModule:
    """One .cu file and the extern "C" kernels it defines."""

    source: str
    kernels: tuple[str, ...]


MODULES = {
    "quant": KernelModule("quant.cu", tuple(f"{k}_{s}" for k in QUANT_KERNELS for s in QUANT_FORMATS.values())),
    "norm": KernelModule("norm.cu", ("rms_norm", "layer_norm", "softmax_rows", "gelu_erf", "geglu", "swiglu")),
    "attention": KernelModule("attention.cu", ("rope", "attention")),
}


def copy_sources(dest: Path) -> list[Path]:
    """Copy the .cu sources and headers into `dest` (a deployed package's votive/quant/cusrc), for an image that
    compiles them while it is built; returns the files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = [spec.source for spec in MODULES.values()] + list(HEADERS)
    for name in names:
        (dest / name).write_bytes((SOURCE_DIR / name).read_bytes())
    return [dest / name for name in names]


def module_of(kernel: str) -> str:
    """The module that defines `kernel`; KernelError for a name no module has."""
    for name, module in MODULES.items():
        if kernel in module.kernels:
            return name
    raise KernelError(f"no CUDA kernel named {kernel!r} (modules: {', '.join(MODULES)})")


def targets(archs=ARCHS) -> list[str]:
    """NVRTC targets for a list of SM versions: a cubin each, plus the PTX."""
    return [f"sm_{a}" for a in archs] + [f"compute_{PTX_ARCH}"]


def binary_name(target: str) -> str:
    return f"{target}.cubin" if target.startswith("sm_") else f"{target}.ptx"


def read_sources(module: str) -> tuple[str, dict[str, str]]:
    """The module's .cu text and its headers (name -> text)."""
    spec = MODULES[module]
    try:
        return ((SOURCE_DIR / spec.source).read_text(),
                {h: (SOURCE_DIR / h).read_text() for h in HEADERS})
    except FileNotFoundError as err:
        raise KernelError(f"CUDA kernel source missing: {err.filename} (votive is installed without cusrc/)") from None


def source_key(module: str) -> str:
    """16 hex digits naming this exact source: the module's .cu, the headers and the compiler options."""
    source, headers = read_sources(module)
    h = hashlib.sha256(MANIFEST_FORMAT.encode())
    for part in (module, source, *[f"{k}\n{v}" for k, v in sorted(headers.items())], *OPTIONS):
        h.update(len(part).to_bytes(8, "little") + part.encode())
    return h.hexdigest()[:16]


def module_dir(cache_dir: Path, module: str) -> Path:
    return Path(cache_dir) / f"{module}-{source_key(module)}"


def compile_module(module: str, target: str, nv=None) -> bytes:
    """One module for one target ("sm_80" or "compute_75"), by NVRTC: the cubin or PTX bytes."""
    from votive.quant import nvrtc

    nv = nv or nvrtc.load()
    source, headers = read_sources(module)
    return nv.compile(source, MODULES[module].source, arch=target, headers=headers, options=OPTIONS).binary


def build(out: Path, archs=ARCHS, *, nv=None, jobs: int | None = None, force: bool = False, say=None) -> dict:
    """Compile every module for every target into the cache directory `out`; no GPU needed.

    Args:
        out: the cache directory (created); binaries already there for the same key are kept unless `force`.
        archs: SM versions to make cubins for (the PTX is always made too).
        nv: an `nvrtc.NVRTC` (default: the first found).
        jobs: parallel compilations (default: the CPUs available); NVRTC runs outside the GIL.
        say: a function taking one line of progress (default: none).

    Returns:
        The manifest, also written to out/manifest.json.

    Raises:
        KernelError: no NVRTC, an architecture this NVRTC does not support, or a source that does not compile.
    """
    from votive.quant import nvrtc

    nv = nv or nvrtc.load()
    supported = set(nv.supported_archs())
    missing = [a for a in archs if a not in supported]
    if missing:
        raise KernelError(f"NVRTC {nv.version[0]}.{nv.version[1]} ({nv.path}) cannot compile for sm_{missing[0]}; "
                          f"it supports {', '.join(f'sm_{a}' for a in sorted(supported))}")
    out = Path(out)
    work = []
    for module in MODULES:
        folder = module_dir(out, module)
        folder.mkdir(parents=True, exist_ok=True)
        for target in targets(archs):
            path = folder / binary_name(target)
            if force or not path.is_file():
                work.append((module, target, path))
    started = time.perf_counter()

    def one(item):
        module, target, path = item
        data = compile_module(module, target, nv)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader never sees half a binary
        return item

    with ThreadPoolExecutor(max_workers=jobs or _cpus()) as pool:
        for module, target, path in pool.map(one, work):
            if say:
                say(f"{module} {target}: {path.stat().st_size} bytes")
    manifest = {
        "format": MANIFEST_FORMAT,
        "nvrtc": "%d.%d" % nv.version,
        "archs": list(archs),
        "ptx_arch": PTX_ARCH,
        "modules": {module: {"source": spec.source, "key": source_key(module), "kernels": list(spec.kernels),
                             "files": [f"{module_dir(out, module).name}/{binary_name(t)}" for t in targets(archs)]}
                    for module, spec in MODULES.items()},
    }
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    if say:
        say(f"compiled {len(work)} binaries in {time.perf_counter() - started:.1f} s into {out}")
    return manifest


def candidates(cache_dir: Path, module: str, capability: int) -> list[Path]:
    """Binaries in `cache_dir` that a GPU of `capability` (e.g. 86) can load, best first: its own cubin, cubins of
    the same major version with a lower minor, then PTX for an architecture at or below it."""
    folder = module_dir(cache_dir, module)
    if not folder.is_dir():
        return []
    major, minor = divmod(capability, 10)
    found = [folder / f"sm_{major}{m}.cubin" for m in range(minor, -1, -1)]
    ptx = sorted(folder.glob("compute_*.ptx"), key=lambda p: -int(p.stem.split("_")[1]))
    found += [p for p in ptx if int(p.stem.split("_")[1]) <= capability]
    return [p for p in found if p.is_file()]


def cache_dirs(environ=os.environ) -> list[Path]:
    """Where binaries are looked for: $VOTIVE_CUDA_KERNELS (a build's --out), then the user cache."""
    dirs = [Path(environ[ENV_CACHE])] if environ.get(ENV_CACHE) else []
    return dirs + [user_cache_dir(environ)]


def user_cache_dir(environ=os.environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or "~").expanduser() / ".cache")
    return Path(base) / "votive" / "cuda-kernels"


class CupyKernels:
    """Kernels by name on the current GPU, as cupy functions: `fn(grid, block, args)`.

    Modules are loaded on first use from the first cache directory holding a binary the device can run; see the
    module docstring for the search and the fallback to compiling here.
    """

    def __init__(self, dirs: list[Path] | None = None, compile_missing: bool = True):
        import cupy

        self._cupy = cupy
        self.dirs = list(dirs) if dirs is not None else cache_dirs()
        self.compile_missing = compile_missing
        self.capability = int(cupy.cuda.Device().compute_capability)
        self.loaded_from: dict[str, str] = {}  # module -> the binary it came from ("compiled here" if none)
        self._modules = {}
        self._functions = {}

    def function(self, name: str):
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = self.module(module_of(name)).get_function(name)
        return fn

    def module(self, module: str):
        if module not in self._modules:
            self._modules[module] = self._load(module)
        return self._modules[module]

    def _load(self, module: str):
        cupy = self._cupy
        errors = []
        for folder in self.dirs:
            for path in candidates(folder, module, self.capability):
                try:
                    loaded = cupy.RawModule(path=str(path))
                    loaded.get_function(MODULES[module].kernels[0])  # loads the module now, so failure shows here
                except Exception as err:  # a cubin from a newer toolkit than the driver, a truncated file, ...
                    errors.append(f"{path}: {err}")
                    continue
                self.loaded_from[module] = str(path)
                return loaded
        if not self.compile_missing:
            raise KernelError(f"no usable CUDA binary of votive's {module!r} kernels for sm_{self.capability} in "
                              f"{', '.join(map(str, self.dirs))}" + (f" ({'; '.join(errors)})" if errors else ""))
        return self._compile_here(module, errors)

    def _compile_here(self, module: str, errors: list[str]):
        target = f"sm_{self.capability}"
        started = time.perf_counter()
        binary = compile_module(module, target)
        log.warning("votive: compiled the CUDA %r kernels for %s at start-up (%.1f s)%s; build them ahead of time "
                    "with `python -m votive.quant.cuda_kernels build --out DIR` and set $%s=DIR", module, target,
                    time.perf_counter() - started, f" ({'; '.join(errors)})" if errors else "", ENV_CACHE)
        path = None
        try:  # keep it for the next start when the user cache is writable
            folder = module_dir(self.dirs[-1], module)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / binary_name(target)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(binary)
            os.replace(tmp, path)
        except OSError:
            path = None
        self.loaded_from[module] = str(path) if path else "compiled here"
        if path is not None:
            return self._cupy.RawModule(path=str(path))
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            temp = Path(tmp) / binary_name(target)
            temp.write_bytes(binary)
            loaded = self._cupy.RawModule(path=str(temp))
            loaded.get_function(MODULES[module].kernels[0])
            return loaded


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m votive.quant.cuda_kernels",
                                     description="Compile votive's CUDA kernels ahead of time (no GPU needed).")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile every kernel module for each architecture into a cache directory")
    b.add_argument("--out", required=True, type=Path, help="cache directory (set $%s to it at run time)" % ENV_CACHE)
    b.add_argument("--arch", default=",".join(map(str, ARCHS)),
                   help="SM versions for cubins, comma-separated (default %(default)s); PTX is always added")
    b.add_argument("--jobs", type=int, default=None, help="parallel compilations (default: CPUs)")
    b.add_argument("--force", action="store_true", help="recompile binaries that are already there")
    args = parser.parse_args(argv)
    try:
        archs = tuple(int(a.strip().removeprefix("sm_")) for a in args.arch.split(",") if a.strip())
    except ValueError:
        print(f"votive: error: --arch takes SM versions like 80,86,90, got {args.arch!r}", file=sys.stderr)
        return 2
    try:
        build(args.out, archs, jobs=args.jobs, force=args.force, say=print)
    except (KernelError, OSError) as err:
        print(f"votive: error: {err}".replace("\n", " | "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
