"""Build step only: compiles votive/quant/libvotive.so, the C kernels. Metadata lives in pyproject.toml.

The library is a plain shared library loaded with ctypes, not a CPython extension (see the docstring of
votive/quant/kernels.py), so it is named without an ABI tag and the wheel is tagged py3-none-<platform>.
It is declared as an optional Extension only so that setuptools runs build_ext for it in every mode:
`pip install .` (into the wheel) and `pip install -e .` (PEP 660: built in place beside the sources).
When no C compiler works the install still succeeds, with a warning, and votive runs its numpy path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
LIBRARY = "votive.quant.libvotive"


def _kernel_build():
    """votive/quant/kernel_build.py, loaded by path: importing votive would need its dependencies."""
    spec = importlib.util.spec_from_file_location("_votive_kernel_build", HERE / "votive" / "quant" / "kernel_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kernel_build = _kernel_build()


class BuildKernels(build_ext):
    """build_ext that makes libvotive.so with kernel_build.build_library instead of a Python extension."""

    def get_ext_filename(self, fullname: str) -> str:
        filename = super().get_ext_filename(fullname)
        if fullname.rpartition(".")[2] == LIBRARY.rpartition(".")[2]:  # asked with or without the package
            return str(Path(filename).with_name(kernel_build.LIBRARY_NAME))
        return filename

    def build_extension(self, ext: Extension) -> None:
        if ext.name != LIBRARY:
            return super().build_extension(ext)
        out = Path(self.get_ext_fullpath(ext.name))
        try:
            kernel_build.build_library(out)
        except kernel_build.KernelBuildError as exc:
            print(f"WARNING: votive's C kernels were not built, so the slower numpy path will run. {exc}",
                  file=sys.stderr)


class PlainLibraryWheel(bdist_wheel):
    """Tag the wheel py3-none-<platform>: the library is tied to the platform but to no Python version."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


csrc = Path("votive", "quant", "csrc")
setup(
    ext_modules=[
        Extension(
            LIBRARY,
            sources=[str(csrc / name) for name in (*kernel_build.COMMON_SOURCES, *kernel_build.ISA_SOURCES)],
            depends=[str(csrc / name) for name in (*kernel_build.HEADERS, "selftest.c")],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernels, "bdist_wheel": PlainLibraryWheel},
)
