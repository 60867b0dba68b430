"""Make an installed dependency tree smaller: drop what no import on the target reads, strip shared libraries.

Every rule is a pattern on the '/'-separated path relative to the tree (fnmatch, where `*` also crosses '/') and
the reason it is safe. Rules only name files no `import` reaches in serving code; the end-to-end tests run the
real handler on the slimmed tree, so a rule that went too far fails them.

    >>> slim_reason("numpy/_core/tests/test_api.py")
    'test suites'
    >>> slim_reason("numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so") is None
    True
"""

from __future__ import annotations

import fnmatch
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from votive.builders.tools import BuildTools

# votive's GPU side, for a target without a GPU (Lambda, a CPU image): `votive.backends.get_backend` never imports
# it there (no NVIDIA device node), and an explicit VOTIVE_BACKEND=cupy gets a BackendError saying it is missing.
GPU_ONLY_RULES: tuple[tuple[str, str], ...] = (
    ("votive/backends/cupy_backend.py", "the GPU backend; this target has no GPU"),
    ("votive/backends/cuda_*.py", "the GPU backend; this target has no GPU"),
    ("votive/quant/cuda_kernels.py", "the CUDA kernels' loader; this target has no GPU"),
    ("votive/quant/nvrtc.py", "the CUDA compiler; this target has no GPU"),
    ("votive/handlers/warm.py", "warms a GPU image's kernel cache; this target has no GPU"),
)

SLIM_RULES: tuple[tuple[str, str], ...] = (
    ("*/tests/*", "test suites"),
    ("tests/*", "test suites"),
    ("*/__pycache__/*", "bytecode of another interpreter (compiled again for the target)"),
    ("*.pyi", "type stubs"),
    ("*/py.typed", "type-checker markers"),
    ("*.h", "C headers"),
    ("*.hpp", "C++ headers"),
    ("*.c", "C sources"),
    ("*.cpp", "C++ sources"),
    ("*.pxd", "Cython declarations"),
    ("*.pyx", "Cython sources"),
    ("*.a", "static libraries (only a C build links them)"),
    ("*.pc", "pkg-config files"),
    ("*.dist-info/RECORD", "install records (they list files slimming removed)"),
    ("*.dist-info/INSTALLER", "install records"),
    ("*.dist-info/REQUESTED", "install records"),
    ("*.dist-info/direct_url.json", "install records"),
    ("bin/*", "console scripts (f2py, numpy-config); a function runs none"),
    ("numpy/f2py/*", "numpy's Fortran wrapper generator"),
    ("numpy/distutils/*", "numpy's build tooling"),
    ("numpy/_pyinstaller/*", "PyInstaller hooks"),
    ("numpy/conftest.py", "test configuration"),
    ("numpy/_core/include/*", "C headers"),
    ("numpy/_core/lib/*", "npymath static library and pkg-config"),
    ("numpy/random/lib/*", "npyrandom static library"),
    ("numpy/random/_examples/*", "Cython and Numba examples"),
    ("numpy/_core/_simd.*", "SIMD test module (numpy's own tests import it)"),
    ("numpy/_core/_*_tests.*", "test extension modules"),
    ("tokenizers/tools/*", "tokenizers' notebook visualizer"),
    # numpy imports these subpackages lazily, on first use; no votive model uses them.
    ("numpy/fft/*", "numpy subpackages votive never uses"),
    ("numpy/polynomial/*", "numpy subpackages votive never uses"),
    ("numpy/ma/*", "numpy subpackages votive never uses"),
    ("numpy/testing/*", "numpy subpackages votive never uses"),
)

_ELF_MAGIC = b"\x7fELF"


@dataclass
class SlimReport:
    """What slimming removed: files and bytes per reason."""

    by_reason: dict[str, list[int]] = field(default_factory=dict)  # reason -> [files, bytes]

    @property
    def files(self) -> int:
        return sum(files for files, _ in self.by_reason.values())

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.by_reason.values())

    def to_json(self) -> dict:
        return {"files": self.files, "bytes": self.bytes,
                "by_reason": {k: {"files": f, "bytes": b} for k, (f, b) in sorted(self.by_reason.items())}}


def slim_reason(relative: str, rules: tuple[tuple[str, str], ...] = SLIM_RULES) -> str | None:
    """Why the file at `relative` can go, or None if it stays."""
    for pattern, reason in rules:
        if fnmatch.fnmatchcase(relative, pattern):
            return reason
    return None


def slim_tree(root: Path, rules: tuple[tuple[str, str], ...] = SLIM_RULES) -> SlimReport:
    """Delete the files under `root` that a rule names, then the folders left empty."""
    report = SlimReport()
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        reason = slim_reason(path.relative_to(root).as_posix(), rules)
        if reason is None:
            continue
        entry = report.by_reason.setdefault(reason, [0, 0])
        entry[0] += 1
        entry[1] += path.lstat().st_size
        path.unlink()
    for folder, _, _ in os.walk(root, topdown=False):  # children before their parents
        if folder != str(root) and not os.listdir(folder):
            os.rmdir(folder)
    return report


@dataclass(frozen=True)
class StripReport:
    files: int  # shared libraries stripped
    saved_bytes: int
    kept: tuple[str, ...] = ()  # libraries left as they were: stripping would have broken them
    skipped: str | None = None  # why nothing was stripped

    def to_json(self) -> dict:
        return {"files": self.files, "saved_bytes": self.saved_bytes, "kept_unstripped": list(self.kept),
                "skipped": self.skipped}


def strip_shared_libraries(root: Path, strip: str | None, tools: BuildTools) -> StripReport:
    """Remove symbol tables and debug sections from every ELF shared library under `root`.

    `--strip-unneeded` keeps the dynamic symbols that loading and linking need; only what debuggers and static
    linkers read goes. Each library is stripped into a copy first and the copy is checked as the dynamic loader
    will check it (`loadable_layout`): libraries that auditwheel rewrote with patchelf (numpy.libs/ holds such)
    come out of binutils' strip with misaligned segments and fail to load ("ELF load command address/offset not
    page-aligned"), so those keep their original bytes. `strip` must be the target architecture's (binutils
    refuses foreign ELF files); None skips with the reason recorded.
    """
    if strip is None:
        return StripReport(0, 0, (), "no strip program for the target architecture (install binutils for it)")
    root = Path(root)
    stripped, saved, kept = 0, 0, []
    for library in sorted(root.rglob("*.so*")):
        if not library.is_file() or library.is_symlink() or not _is_elf(library):
            continue
        candidate = library.with_name(library.name + ".stripped")
        try:
            tools.check([strip, "--strip-unneeded", "-o", str(candidate), str(library)], f"strip {library.name}")
            if not loadable_layout(candidate.read_bytes()):
                kept.append(library.relative_to(root).as_posix())
                continue
            saved += library.stat().st_size - candidate.stat().st_size
            stripped += 1
            candidate.chmod(library.stat().st_mode)
            candidate.replace(library)
        finally:
            candidate.unlink(missing_ok=True)
    return StripReport(stripped, saved, tuple(kept))


def loadable_layout(elf: bytes) -> bool:
    """True when every PT_LOAD segment of a 64-bit ELF file is aligned as the dynamic loader requires
    (p_vaddr = p_offset modulo p_align) and lies within the file. Other ELF classes are not checked."""
    if elf[:4] != _ELF_MAGIC or elf[4] != 2:  # EI_CLASS 2: 64-bit
        return True
    order = "<" if elf[5] == 1 else ">"  # EI_DATA 1: little-endian
    phoff, = struct.unpack_from(order + "Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from(order + "HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz, _, align = struct.unpack_from(order + "IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type != 1:  # PT_LOAD
            continue
        if (align > 1 and (vaddr - offset) % align) or offset + filesz > len(elf):
            return False
    return True


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _ELF_MAGIC
