"""Facts about the platforms votive builds for, one table each: Lambda's Python runtimes, CPU architectures, limits.

Each table row says where the fact comes from, so that when AWS changes a runtime the fix is one line here.

    >>> lambda_runtime("3.12").glibc
    (2, 34)
    >>> manylinux_platforms(architecture("arm64"), (2, 26))[:3]
    ['manylinux2014_aarch64', 'manylinux_2_17_aarch64', 'manylinux_2_18_aarch64']
"""

from __future__ import annotations

from dataclasses import dataclass

from votive.errors import PackagingError

MB = 1024 * 1024  # AWS's "MB" in Lambda's quotas is 2**20 bytes


@dataclass(frozen=True)
class LambdaRuntime:
    """One of Lambda's managed Python runtimes."""

    python: str  # "3.11": the interpreter's major.minor
    identifier: str  # the Runtime value in Lambda's API
    os: str  # the Amazon Linux release the runtime runs on
    glibc: tuple[int, int]  # that release's C library: no binary in the layer may need a newer one

    @property
    def abi(self) -> str:
        """CPython's ABI tag for wheels: 'cp311'."""
        return "cp" + self.python.replace(".", "")


# From the runtime table in the Lambda developer guide ("Building Lambda functions with Python"). Amazon Linux 2
# ships glibc 2.26 and Amazon Linux 2023 glibc 2.34; a library built against a newer glibc fails to load there.
LAMBDA_RUNTIMES: dict[str, LambdaRuntime] = {
    "3.11": LambdaRuntime("3.11", "python3.11", "Amazon Linux 2", (2, 26)),
    "3.12": LambdaRuntime("3.12", "python3.12", "Amazon Linux 2023", (2, 34)),
    "3.13": LambdaRuntime("3.13", "python3.13", "Amazon Linux 2023", (2, 34)),
}


@dataclass(frozen=True)
class Architecture:
    """A CPU architecture under its Lambda name and its toolchain names."""

    name: str  # Lambda's Architectures value: "x86_64" or "arm64"
    machine: str  # what uname, wheel tags and GCC triplets call it: "x86_64", "aarch64"
    tool_prefix: str  # Debian's cross toolchain prefix: "aarch64-linux-gnu-" (gcc, strip, objdump)
    elf_machine: int  # e_machine in an ELF header: 62 (EM_X86_64), 183 (EM_AARCH64)
    glibc_baseline: str  # the oldest glibc symbol version on this architecture (where pthread_* started)
    qemu: str  # qemu-user binary that runs this architecture's programs on another
    sysroot: str  # Debian's cross sysroot (qemu -L, and the libc whose symbol versions we read)


ARCHITECTURES: dict[str, Architecture] = {
    "x86_64": Architecture("x86_64", "x86_64", "x86_64-linux-gnu-", 62, "2.2.5", "qemu-x86_64",
                           "/usr/x86_64-linux-gnu"),
    "arm64": Architecture("arm64", "aarch64", "aarch64-linux-gnu-", 183, "2.17", "qemu-aarch64",
                          "/usr/aarch64-linux-gnu"),
}
_ARCH_ALIASES = {"amd64": "x86_64", "aarch64": "arm64"}


@dataclass(frozen=True)
class LambdaLimits:
    """Lambda's quotas that a build is checked against (Lambda developer guide, "Lambda quotas")."""

    direct_upload_zip: int = 50 * MB  # a .zip sent in the API call itself; larger ones go through S3
    unzipped_total: int = 250 * MB  # function code plus all its layers, unzipped; hard limit
    layers: int = 5  # layers per function
    memory_mb: tuple[int, int] = (128, 10240)
    ephemeral_storage_mb: tuple[int, int] = (512, 10240)  # /tmp
    timeout_s: int = 900
    container_image: int = 10 * 1024 * MB  # an image's uncompressed size


LAMBDA_LIMITS = LambdaLimits()

# Memory buys CPU on Lambda: at 1769 MB a function has one full vCPU, below it a share of one.
ONE_VCPU_MEMORY_MB = 1769

# The GPU stack, pinned here once for the GPU container image and the Modal app alike (the versions the GPU tests
# ran with): cupy built for CUDA 12, and NVRTC, which compiles votive's CUDA kernels, for a base image without it.
GPU_PINS = {"cupy-cuda12x": "13.6.0", "nvidia-cuda-nvrtc-cu12": "12.9.86"}
# votive's memory floor, the one figure the build's manifest, `deploy aws` and the exported templates share:
# above one vCPU, which the BLAS threads use.
DEFAULT_MEMORY_MB = 2048


def lambda_runtime(python: str) -> LambdaRuntime:
    """The runtime for a Python version ('3.11'), or PackagingError naming those Lambda offers."""
    try:
        return LAMBDA_RUNTIMES[python]
    except KeyError:
        raise PackagingError(
            f"Python {python!r} is not a Lambda runtime votive builds for; choose one of {', '.join(LAMBDA_RUNTIMES)}"
        ) from None


def architecture(name: str) -> Architecture:
    """The architecture by Lambda name ('x86_64', 'arm64') or alias ('amd64', 'aarch64')."""
    key = _ARCH_ALIASES.get(name, name)
    try:
        return ARCHITECTURES[key]
    except KeyError:
        raise PackagingError(
            f"architecture {name!r} is not one Lambda runs; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def manylinux_platforms(arch: Architecture, glibc: tuple[int, int]) -> list[str]:
    """pip `--platform` tags for wheels that run on `glibc`: manylinux2014 (= 2.17) and each 2.x up to it.

    pip takes each tag literally, so every glibc minor from 17 up is listed: a wheel tagged manylinux_2_28 runs on
    glibc 2.34 but would not be found by asking for manylinux_2_34 alone.
    """
    major, minor = glibc
    if major != 2 or minor < 17:
        raise PackagingError(f"glibc {major}.{minor} is older than manylinux2014 (2.17); no wheels target it")
    return [f"manylinux2014_{arch.machine}"] + [f"manylinux_2_{m}_{arch.machine}" for m in range(17, minor + 1)]


def parse_glibc(text: str) -> tuple[int, ...]:
    """'2.2.5' -> (2, 2, 5), for comparing symbol versions."""
    return tuple(int(part) for part in text.split("."))
