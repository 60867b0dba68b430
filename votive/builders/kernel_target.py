"""Build libvotive.so, the C kernel library, for a target architecture and C library, and test it there.

x86_64 is built with this machine's compiler when it is an x86_64 one, arm64 with Debian's cross compiler
(`gcc-aarch64-linux-gnu`). The library's own C self-test then runs on the target CPU: natively, or under qemu-user
(`qemu-aarch64 -L /usr/aarch64-linux-gnu`) when the build machine is another architecture.

The C library matters as much as the CPU. A library linked here against glibc 2.34 or newer asks for
`pthread_create@GLIBC_2.34` (glibc moved libpthread into libc then), and Lambda's python3.11 runtime (Amazon
Linux 2, glibc 2.26) would refuse to load it. So the build reads the glibc symbol versions the library needs
(`objdump -T`); when one is newer than the target's glibc and the target's libc also exports the symbol under an
older version, the library is rebuilt with a header of `.symver` directives that bind the symbol to that older
version, which every glibc since keeps as a compatibility symbol. When no older version exists the build stops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from votive.builders.targets import Architecture, parse_glibc
from votive.builders.tools import BuildTools
from votive.errors import PackagingError
from votive.quant import kernel_build

# objdump -T lines: "...  DF *UND*  0000000000000000 (GLIBC_2.34) pthread_create" for what a library needs,
# "...  g  DF .text  00000000000000dc (GLIBC_2.2.5) pthread_sigmask" for what a libc defines ("(...)": not default).
_SYMBOL_VERSION = re.compile(r"\(?GLIBC_([0-9.]+)\)?\s+(\S+)\s*$")


@dataclass(frozen=True)
class KernelReport:
    """The library built for the target and what is known about it."""

    path: Path
    machine: str  # "x86_64", "aarch64"
    glibc_required: str  # the newest glibc symbol version it needs, e.g. "2.17"
    pinned_symbols: tuple[str, ...]  # "pthread_create@GLIBC_2.2.5": bound to an older version for the target
    selftest: str  # "passed (native)", "passed (qemu-aarch64)" or "skipped: <why>"

    def to_json(self) -> dict:
        return {"machine": self.machine, "glibc_required": self.glibc_required,
                "pinned_symbols": list(self.pinned_symbols), "selftest": self.selftest}


# Libraries built in this process, by everything that decides their bytes: a process that builds several
# artifacts (the deploy command, the tests, the benchmark) compiles each (architecture, glibc) once.
_BUILT: dict[tuple, tuple[bytes, KernelReport]] = {}


def build_kernels(dest: Path, arch: Architecture, glibc: tuple[int, int], tools: BuildTools) -> KernelReport:
    """Compile libvotive.so for `arch` into `dest` (a file path), check its glibc needs, run its self-test.

    Raises:
        PackagingError: no compiler for the target, a compile step failed, the library needs a newer glibc than
            `glibc` with no older symbol version to fall back on, or the self-test failed.
    """
    cc = _compiler(arch, tools)
    key = (tuple(cc), arch.name, glibc, tools.run, _sources_digest())
    if key in _BUILT:
        data, report = _BUILT[key]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dataclasses.replace(report, path=dest)
    report = _build_kernels(dest, cc, arch, glibc, tools)
    _BUILT[key] = (dest.read_bytes(), report)
    return report


def _build_kernels(dest: Path, cc: list[str], arch: Architecture, glibc: tuple[int, int],
                   tools: BuildTools) -> KernelReport:
    objdump = _tool(arch, "objdump", tools)
    with tempfile.TemporaryDirectory(prefix="votive-kernels-") as tmp:
        library = Path(tmp) / kernel_build.LIBRARY_NAME
        _build(library, cc, tools)
        needs = symbol_versions(tools.check([objdump, "-T", library], f"read {library.name}'s symbols"), undefined=True)
        too_new = {sym: v for sym, v in needs.items() if parse_glibc(v) > glibc}
        pinned: tuple[str, ...] = ()
        if too_new:
            offered: dict[str, list[str]] = {}
            for name in ("libc.so.6", "libm.so.6"):  # the kernels call into both (libm: expf, powf, cosf, ...)
                lib = tools.check([*cc, f"-print-file-name={name}"], f"find the target's {name}").strip()
                for symbol, versions in libc_symbol_versions(tools.check([objdump, "-T", lib], f"read {lib}'s symbols")).items():
                    offered.setdefault(symbol, []).extend(versions)
            pins = choose_pins(too_new, offered, glibc, where=f"{library.name} for {arch.name}")
            header = Path(tmp) / "glibc_pins.h"
            header.write_text(symver_header(pins))
            cc = [*cc, "-include", str(header)]
            _build(library, cc, tools)
            needs = symbol_versions(tools.check([objdump, "-T", library], "read the rebuilt symbols"), undefined=True)
            still = sorted(f"{s}@GLIBC_{v}" for s, v in needs.items() if parse_glibc(v) > glibc)
            if still:
                raise PackagingError(f"{library.name} for {arch.name} still needs {', '.join(still)} after pinning; "
                                     f"the target has glibc {glibc[0]}.{glibc[1]}")
            pinned = tuple(sorted(f"{s}@GLIBC_{v}" for s, v in pins.items()))
            tools.log(f"kernels: bound {', '.join(pinned)} for glibc {glibc[0]}.{glibc[1]}")
        required = max(needs.values(), key=parse_glibc, default="0")
        selftest = _selftest(library, cc, arch, tools)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(library, dest)
    return KernelReport(dest, arch.machine, required, pinned, selftest)


def _sources_digest() -> str:
    """sha256 over the C sources and the build script: a change to either is a new library."""
    digest = hashlib.sha256()
    for path in sorted(kernel_build.SOURCE_DIR.iterdir()) + [Path(kernel_build.__file__)]:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def symbol_versions(objdump_output: str, *, undefined: bool) -> dict[str, str]:
    """symbol -> newest GLIBC version from `objdump -T` output; `undefined`: only what the file needs (*UND*)."""
    found: dict[str, str] = {}
    for line in objdump_output.splitlines():
        if undefined != ("*UND*" in line):
            continue
        match = _SYMBOL_VERSION.search(line)
        if match:
            version, symbol = match.groups()
            if symbol not in found or parse_glibc(version) > parse_glibc(found[symbol]):
                found[symbol] = version
    return found


def libc_symbol_versions(objdump_output: str) -> dict[str, list[str]]:
    """symbol -> every GLIBC version a libc defines it under (compatibility versions included)."""
    offered: dict[str, list[str]] = {}
    for line in objdump_output.splitlines():
        if "*UND*" in line:
            continue
        match = _SYMBOL_VERSION.search(line)
        if match:
            version, symbol = match.groups()
            offered.setdefault(symbol, []).append(version)
    return offered


def choose_pins(too_new: dict[str, str], offered: dict[str, list[str]], glibc: tuple[int, int], *,
                where: str) -> dict[str, str]:
    """For each too-new symbol, the newest version the libc offers that the target's glibc has.

    Raises:
        PackagingError: a symbol has no such version (a function newer than the target's glibc).
    """
    pins, impossible = {}, []
    for symbol, version in sorted(too_new.items()):
        older = [v for v in offered.get(symbol, []) if parse_glibc(v) <= glibc]
        if older:
            pins[symbol] = max(older, key=parse_glibc)
        else:
            impossible.append(f"{symbol}@GLIBC_{version}")
    if impossible:
        raise PackagingError(
            f"{where} needs {', '.join(impossible)}, newer than the target's glibc {glibc[0]}.{glibc[1]}, with no "
            "older version to bind to: build on a distribution with an older glibc, or choose a newer runtime "
            "(Python 3.12+ on Lambda runs Amazon Linux 2023, glibc 2.34)"
        )
    return pins


def symver_header(pins: dict[str, str]) -> str:
    """A C header binding each symbol to a glibc version (passed with -include to every compile)."""
    lines = ["/* Written by votive.builders.kernel_target: bind these glibc symbols to older versions. */"]
    lines += [f'__asm__(".symver {s},{s}@GLIBC_{v}");' for s, v in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def _build(library: Path, cc: list[str], tools: BuildTools) -> None:
    tools.log(f"kernels: compiling {library.name} with {' '.join(cc)}")
    try:
        kernel_build.build_library(library, cc=cc, run=tools.run)
    except kernel_build.KernelBuildError as err:
        raise PackagingError(f"cannot build the kernel library: {err}") from None


def _selftest(library: Path, cc: list[str], arch: Architecture, tools: BuildTools) -> str:
    try:
        program = kernel_build.build_selftest(library, cc=cc, run=tools.run)
    except kernel_build.KernelBuildError as err:
        raise PackagingError(f"cannot build the kernel self-test: {err}") from None
    if platform.machine() == arch.machine:
        command, how = [str(program)], "native"
    elif tools.which(arch.qemu):
        command, how = [arch.qemu, "-L", arch.sysroot, str(program)], arch.qemu
    else:
        return f"skipped: {arch.qemu} not found (apt-get install qemu-user) to run {arch.machine} code here"
    output = tools.check(command, f"run the kernel self-test ({how})")
    tools.log(f"kernels: self-test passed ({how}): {output.strip().splitlines()[-1] if output.strip() else ''}")
    return f"passed ({how})"


def _compiler(arch: Architecture, tools: BuildTools) -> list[str]:
    if platform.machine() == arch.machine:
        return kernel_build.default_cc()
    cross = arch.tool_prefix + "gcc"
    if tools.which(cross) is None:
        package = f"gcc-{arch.tool_prefix.rstrip('-')}"
        raise PackagingError(f"cannot build the kernel library for {arch.name}: the cross compiler {cross} is not "
                             f"installed (apt-get install {package})")
    return [cross]


def _tool(arch: Architecture, name: str, tools: BuildTools) -> str:
    """binutils program `name` that reads the target's ELF files: the cross one, else the native one."""
    if platform.machine() != arch.machine and tools.which(arch.tool_prefix + name):
        return arch.tool_prefix + name
    return name


def strip_program(arch: Architecture, tools: BuildTools) -> str | None:
    """`strip` for the target's ELF files, or None when there is none."""
    program = _tool(arch, "strip", tools)
    return program if tools.which(program) else None
