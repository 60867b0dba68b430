"""Packaging builders, piece by piece, with a recording fake toolchain in place of pip, the compiler and strip.

The end-to-end proof that real builds serve requests on their own is in test_packaging_e2e.py; here every rule
is checked in isolation: archive safety and reproducibility, target tables, dependency closure, slimming, glibc
pinning, limits and their messages, atomic outputs, the function's entry point, and the whole Lambda build's
decisions (placement, manifest, commands run) without running any real tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from votive import files
from votive.builders import archive
from votive.builders import size_limits as limits
from votive.builders.bytecode import compile_tree
from votive.builders.dependencies import (
    DependencyTarget,
    Distribution,
    install_for_target,
    missing_requirements,
    pip_install_args,
)
from votive.builders.kernel_target import build_kernels, choose_pins, libc_symbol_versions, symbol_versions
from votive.builders.lambda_build import LambdaTarget, build_lambda
from votive.builders.model_files import collect_model
from votive.builders.output import staged_output, write_json
from votive.builders.slim import loadable_layout, slim_reason, slim_tree, strip_shared_libraries
from votive.builders.targets import architecture, lambda_runtime, manylinux_platforms
from votive.builders.tools import BuildTools
from votive.errors import PackagingError, VotiveFault
from votive.handlers.asgi import lambda_asgi_app, url_event
from votive.handlers.entry import function_handler, lambda_root, local_model, read_config

X86 = architecture("x86_64")
ARM = architecture("arm64")


# --- a fake toolchain --------------------------------------------------------------------------------------


def elf(size: int = 4096, *, aligned: bool = True) -> bytes:
    """A minimal 64-bit little-endian ELF image with one PT_LOAD segment, aligned or not."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    vaddr = 0x1000 if aligned else 0x1010
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, vaddr, vaddr, size, size, 0x1000)
    return bytes(header) + phdr + b"\0" * (size - 64 - len(phdr))


UNDEFINED = """
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) memcpy
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.34) pthread_create
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.32) pthread_sigmask
"""
LIBC = """
0000000000089380 g    DF .text  0000000000000eed (GLIBC_2.2.5) pthread_create
0000000000089380 g    DF .text  0000000000000eed  GLIBC_2.34  pthread_create
000000000008fd90 g    DF .text  00000000000000dc (GLIBC_2.2.5) pthread_sigmask
000000000008fd90 g    DF .text  00000000000000dc  GLIBC_2.32  pthread_sigmask
"""

# name -> (version, Requires-Dist lines)
WHEELS = {
    "numpy": ("2.2.6", []),
    "tokenizers": ("0.23.3", ["huggingface-hub<2.0,>=0.16.4"]),
    "jinja2": ("3.1.6", ["MarkupSafe>=2.0", 'Babel>=2.7; extra == "i18n"']),
    "markupsafe": ("3.0.2", []),
    "awslambdaric": ("4.2.2", ["simplejson>=3.20.1", "snapshot-restore-py>=1.0.0"]),
    "simplejson": ("4.3.0", []),
    "snapshot-restore-py": ("1.0.0", []),
    "cupy-cuda12x": ("13.6.0", ["numpy<2.6,>=2.0", "fastrlock>=0.5"]),
    "fastrlock": ("0.8.3", []),
}
_VALUED = {"--target", "--implementation", "--python-version", "--abi", "--platform", "--constraint", "--progress-bar"}


class FakeToolchain:
    """Plays pip, cc, objdump, strip, the kernel self-test and the target interpreter; records every command."""

    def __init__(self, *, strip_breaks: tuple[str, ...] = (), python_version: str | None = "3.11"):
        self.calls: list[list[str]] = []
        self.strip_breaks = strip_breaks
        self.python_version = python_version

    def tools(self) -> BuildTools:
        return BuildTools(run=self, which=self.which, pip=("fake-pip",), interpreter_dirs=())

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name != "docker" else None

    def __call__(self, args, capture_output=True, text=True, check=False, cwd=None):
        args = [str(a) for a in args]
        self.calls.append(args)
        out = ""
        program = Path(args[0]).name
        if program == "fake-pip":
            self._pip(args)
        elif "-dumpmachine" in args:
            out = "x86_64-linux-gnu\n"
        elif "-print-file-name=libc.so.6" in args:
            out = "/fake/libc.so.6\n"
        elif program.endswith("objdump"):
            out = LIBC if args[-1] == "/fake/libc.so.6" else self._undefined()
        elif program.endswith("strip"):
            source, target = Path(args[-1]), Path(args[args.index("-o") + 1])
            target.write_bytes(elf(2048, aligned=source.name not in self.strip_breaks))
        elif program == "votive-selftest" or program.startswith("qemu"):
            out = "all passed\n"
        elif "-c" in args and "sys.version_info" in args[-1]:
            if self.python_version is None:
                return subprocess.CompletedProcess(args, 1, "", "no such interpreter")
            out = self.python_version + "\n"
        elif "-c" in args and "python_version()" in args[-1]:
            out = self.python_version + ".9\n"
        elif "compileall" in args:
            root = Path(args[-1])
            for source in root.rglob("*.py"):
                cache = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
                cache.parent.mkdir(exist_ok=True)
                cache.write_bytes(b"pyc")
        elif "-o" in args:  # compile or link: write the output
            Path(args[args.index("-o") + 1]).write_bytes(elf())
        return subprocess.CompletedProcess(args, 0, out, "")

    def _undefined(self) -> str:
        # the first link has the new pthread symbols; after pinning (-include), only old ones remain
        pinned = any("-include" in call for call in self.calls)
        return UNDEFINED.replace("GLIBC_2.34", "GLIBC_2.2.5").replace("GLIBC_2.32", "GLIBC_2.2.5") if pinned \
            else UNDEFINED

    def _pip(self, args: list[str]) -> None:
        site = Path(args[args.index("--target") + 1])
        requirements, skip = [], False
        for arg in args[2:]:
            if skip:
                skip = False
            elif arg in _VALUED:
                skip = True
            elif not arg.startswith("-"):
                requirements.append(arg)
        for requirement in requirements:
            name = requirement.split(">")[0].split("=")[0].split("<")[0].lower()
            version, requires = WHEELS[name]
            (site / name / "tests").mkdir(parents=True, exist_ok=True)
            (site / name / "__init__.py").write_text("")
            (site / name / "tests" / "test_x.py").write_text("")
            (site / name / "__init__.pyi").write_text("")
            (site / name / "_core.cpython-311-x86_64-linux-gnu.so").write_bytes(elf(8192))
            info = site / f"{name}-{version}.dist-info"
            info.mkdir(exist_ok=True)
            lines = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
            (info / "METADATA").write_text("\n".join(lines) + "\n")
            (info / "RECORD").write_text("")

    def commands(self, program: str) -> list[list[str]]:
        return [c for c in self.calls if Path(c[0]).name == program]


# --- archives ----------------------------------------------------------------------------------------------


def test_zip_bytes_depend_only_on_contents(tmp_path):
    for tree, stamp in (("a", 1_000_000), ("b", 1_700_000_000)):
        root = tmp_path / tree
        for name in ("z.txt", "sub/a.txt", "m.txt"):  # written in another order than the archive's
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name * 10)
            os.utime(root / name, (stamp, stamp))
        os.chmod(root / "m.txt", 0o600)
    first = archive.write_zip(tmp_path / "a.zip", archive.tree_members(tmp_path / "a", "python/"))
    second = archive.write_zip(tmp_path / "b.zip", archive.tree_members(tmp_path / "b", "python/"))
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert first.sha256 == second.sha256 and first.files == 3 and first.unzipped_bytes == 50 + 90 + 50
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == ["python/m.txt", "python/sub/a.txt", "python/z.txt"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {stat.S_IMODE(i.external_attr >> 16) for i in infos} == {0o644}


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", "a//b", "C:/x", "a\\b", "", "./a"])
def test_unsafe_member_names_are_refused(tmp_path, name):
    with pytest.raises(PackagingError, match="member name"):
        files.check_member_name(name)
    with pytest.raises(PackagingError, match="member name"):
        archive.write_zip(tmp_path / "x.zip", [archive.Member(name, data=b"x")])
    assert not (tmp_path / "x.zip").exists()


def test_extract_refuses_names_and_links_that_leave_the_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../outside.txt", "bad")
    with pytest.raises(PackagingError, match="'../outside.txt'"):
        archive.extract_zip(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()

    linked = tmp_path / "link.zip"
    with zipfile.ZipFile(linked, "w") as zf:
        info = zipfile.ZipInfo("python/escape")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../etc")
    with pytest.raises(PackagingError, match="link to '../../../etc'"):
        archive.extract_zip(linked, tmp_path / "out2")


def test_tree_links_inside_are_followed_outside_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "real.txt").write_text("data")
    (root / "alias.txt").symlink_to("real.txt")
    members = {m.name: m for m in archive.tree_members(root)}
    assert set(members) == {"real.txt", "alias.txt"}
    (tmp_path / "secret").write_text("x")
    (root / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(PackagingError, match="outside"):
        archive.tree_members(root)
    (root / "leak").unlink()
    (root / "folder").symlink_to(tmp_path)
    with pytest.raises(PackagingError, match="a link to a folder"):
        archive.tree_members(root)


def test_extract_round_trip_keeps_modes(tmp_path):
    built = archive.write_zip(tmp_path / "a.zip", [archive.Member("bin/run", data=b"#!", executable=True),
                                                    archive.Member("lib/x.py", data=b"x = 1")])
    archive.extract_zip(built.path, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/bin/run").stat().st_mode) == 0o755
    assert (tmp_path / "out/lib/x.py").read_text() == "x = 1"


# --- targets and limits ------------------------------------------------------------------------------------


def test_runtime_table_and_wheel_platforms():
    assert lambda_runtime("3.11").glibc == (2, 26) and lambda_runtime("3.11").os == "Amazon Linux 2"
    assert lambda_runtime("3.13").glibc == (2, 34)
    tags = manylinux_platforms(ARM, (2, 34))
    assert tags[0] == "manylinux2014_aarch64" and tags[-1] == "manylinux_2_34_aarch64" and len(tags) == 19
    assert architecture("aarch64") is ARM and architecture("amd64") is X86
    with pytest.raises(PackagingError, match="choose one of 3.11, 3.12, 3.13"):
        lambda_runtime("3.9")
    with pytest.raises(PackagingError, match="'ppc64le' is not one Lambda runs"):
        architecture("ppc64le")


def test_limit_messages_say_which_by_how_much_and_what_to_do():
    over = limits.unzipped_total({"runtime": 60 * 2**20, "model": 200 * 2**20})
    assert not over.ok and over.severity == "error"
    assert "unzip to 260.0 MB" in over.message and "10.0 MB over Lambda's 250.0 MB" in over.message
    assert "--weights s3" in over.message and "votive build image" in over.message and "quantized" in over.message
    upload = limits.direct_upload("model.zip", 80 * 2**20)
    assert upload.severity == "warning" and "30.0 MB over the 50.0 MB" in upload.message and "S3" in upload.message
    assert limits.layer_count(6).message.startswith("6 layers, 1 over")
    assert "container image" in limits.ephemeral_storage(20000).message
    assert limits.suggested_memory_mb(90 * 2**20) == 2048  # votive's floor: more than one vCPU
    assert limits.suggested_memory_mb(2000 * 2**20) == 2560
    assert limits.suggested_ephemeral_mb(10 * 2**20) == 512
    assert limits.suggested_ephemeral_mb(1000 * 2**20) == 1216


# --- dependencies ------------------------------------------------------------------------------------------


def test_pip_arguments_target_the_platform_not_this_machine(tmp_path):
    target = DependencyTarget("3.12", ARM, (2, 34))
    args = pip_install_args(target, tmp_path, ["tokenizers>=0.15", "numpy>=1.24"])
    joined = " ".join(args)
    assert "--only-binary=:all:" in args and "--no-deps" in args and "--no-compile" in args
    assert "--python-version 3.12" in joined and "--implementation cp" in joined and "--abi cp312" in joined
    assert "--platform manylinux2014_aarch64" in joined and "--platform manylinux_2_34_aarch64" in joined
    assert args[-2:] == ["numpy>=1.24", "tokenizers>=0.15"] and args[args.index("--target") + 1] == str(tmp_path)


def test_closure_installs_what_is_needed_and_leaves_out_the_hub(tmp_path):
    fake = FakeToolchain()
    installed = install_for_target(fake.tools(), DependencyTarget("3.11", X86, (2, 26)), tmp_path,
                                   ["tokenizers>=0.15", "jinja2>=3.1"],
                                   left_out={"huggingface-hub": "not needed"})
    assert sorted(installed) == ["jinja2", "markupsafe", "tokenizers"]
    rounds = fake.commands("fake-pip")
    assert [c[-1] for c in rounds] == ["tokenizers>=0.15", "MarkupSafe>=2.0"]  # the second round adds markupsafe


def test_missing_requirements_evaluates_markers_and_checks_versions():
    target = DependencyTarget("3.12", X86, (2, 34))
    installed = {"a": Distribution("a", "1.0", ("b>=2", 'c; python_version < "3.11"', 'd; extra == "x"',
                                                "hub>=1")),
                 "b": Distribution("b", "2.5", ())}
    assert missing_requirements(installed, target, {"hub": "left out"}) == []
    installed["b"] = Distribution("b", "1.9", ())
    with pytest.raises(PackagingError, match="a 1.0 needs b>=2, but 1.9 was installed"):
        missing_requirements(installed, target, {"hub": "left out"})


# --- slimming and stripping --------------------------------------------------------------------------------


def test_slim_rules():
    assert slim_reason("numpy/_core/tests/test_api.py") == "test suites"
    assert slim_reason("numpy/f2py/__init__.py") == "numpy's Fortran wrapper generator"
    assert slim_reason("tokenizers/__init__.pyi") == "type stubs"
    assert slim_reason("numpy-2.2.6.dist-info/RECORD").startswith("install records")
    for kept in ("numpy/__init__.py", "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
                 "numpy-2.2.6.dist-info/METADATA", "numpy-2.2.6.dist-info/LICENSE.txt", "numpy/linalg/linalg.py",
                 "tokenizers/tokenizers.abi3.so", "votive/quant/libvotive.so"):
        assert slim_reason(kept) is None, kept


def test_slim_tree_reports_and_removes_empty_folders(tmp_path):
    for name in ("pkg/__init__.py", "pkg/tests/test_a.py", "pkg/tests/data/x.bin", "pkg/a.pyi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"12345")
    report = slim_tree(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["pkg", "pkg/__init__.py"]
    assert report.files == 3 and report.bytes == 15 and report.by_reason["test suites"] == [2, 10]


def test_loadable_layout_catches_misaligned_segments():
    assert loadable_layout(elf())
    assert not loadable_layout(elf(aligned=False))
    assert loadable_layout(b"not an elf at all")


def test_strip_keeps_libraries_it_would_break(tmp_path):
    (tmp_path / "pkg.libs").mkdir()
    (tmp_path / "pkg.libs/libpatched.so.1").write_bytes(elf(8192))
    (tmp_path / "mod.so").write_bytes(elf(8192))
    (tmp_path / "notelf.so").write_bytes(b"text")
    fake = FakeToolchain(strip_breaks=("libpatched.so.1",))
    report = strip_shared_libraries(tmp_path, "strip", fake.tools())
    assert report.files == 1 and report.saved_bytes == 8192 - 2048
    assert report.kept == ("pkg.libs/libpatched.so.1",)
    assert len((tmp_path / "pkg.libs/libpatched.so.1").read_bytes()) == 8192  # original bytes kept
    assert not list(tmp_path.rglob("*.stripped"))
    assert strip_shared_libraries(tmp_path, None, fake.tools()).skipped.startswith("no strip program")


# --- kernels and glibc -------------------------------------------------------------------------------------


def test_glibc_symbol_versions_and_pins():
    needs = symbol_versions(UNDEFINED, undefined=True)
    assert needs == {"memcpy": "2.2.5", "pthread_create": "2.34", "pthread_sigmask": "2.32"}
    offered = libc_symbol_versions(LIBC)
    assert offered["pthread_create"] == ["2.2.5", "2.34"]
    pins = choose_pins({"pthread_create": "2.34"}, offered, (2, 26), where="lib")
    assert pins == {"pthread_create": "2.2.5"}
    with pytest.raises(PackagingError, match=r"needs getrandom@GLIBC_2.25, newer than the target's glibc 2.17"):
        choose_pins({"getrandom": "2.25"}, {"getrandom": ["2.25"]}, (2, 17), where="lib")


def test_kernels_for_an_older_glibc_are_rebuilt_with_pinned_symbols(tmp_path):
    fake = FakeToolchain()
    report = build_kernels(tmp_path / "libvotive.so", X86, (2, 26), fake.tools())
    assert report.pinned_symbols == ("pthread_create@GLIBC_2.2.5", "pthread_sigmask@GLIBC_2.2.5")
    assert report.glibc_required == "2.2.5" and report.selftest == "passed (native)"
    assert any("-include" in call for call in fake.calls)
    assert (tmp_path / "libvotive.so").is_file()

    fresh = FakeToolchain()
    newer = build_kernels(tmp_path / "new" / "libvotive.so", X86, (2, 34), fresh.tools())
    assert newer.pinned_symbols == () and newer.glibc_required == "2.34"
    assert not any("-include" in call for call in fresh.calls)


def test_cross_compiler_missing_says_what_to_install(tmp_path):
    tools = FakeToolchain().tools()
    tools.which = lambda name: None
    if os.uname().machine == "aarch64":
        pytest.skip("arm64 is native here")
    with pytest.raises(PackagingError, match="apt-get install gcc-aarch64-linux-gnu"):
        build_kernels(tmp_path / "libvotive.so", ARM, (2, 34), tools)


# --- bytecode ----------------------------------------------------------------------------------------------


def test_no_interpreter_for_the_target_skips_bytecode_with_a_reason(tmp_path):
    (tmp_path / "m.py").write_text("x = 1")
    report = compile_tree(tmp_path, "/opt/python", "3.13", FakeToolchain(python_version=None).tools())
    assert report.files == 0 and "no Python 3.13 interpreter" in report.skipped


def test_unchecked_hash_bytecode_is_used_without_reading_the_source(tmp_path):
    """Lambda's files are read-only and their mtimes arbitrary: the pyc must be trusted as it is."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("ANSWER = 42\n")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    report = compile_tree(tmp_path, "/opt/python", version, BuildTools())
    assert report.files == 2 and report.interpreter.startswith(version)
    (tmp_path / "pkg" / "mod.py").write_text("ANSWER = 0  # changed after the build\n")
    out = subprocess.run([sys.executable, "-I", "-B", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "import pkg.mod; print(pkg.mod.ANSWER, pkg.mod.__spec__.cached)", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "42" and "cpython" in out[1]
    code = (tmp_path / "pkg" / "__pycache__").glob("mod.*.pyc").__next__().read_bytes()
    assert int.from_bytes(code[4:8], "little") == 0b01  # PEP 552 flags: hash-based, unchecked


# --- atomic outputs ----------------------------------------------------------------------------------------


def test_output_is_never_overwritten_without_force(tmp_path):
    dest = tmp_path / "build"
    with staged_output(dest) as stage:
        write_json(stage / "manifest.json", {"format": "votive-build/1"})
    assert (dest / "manifest.json").is_file() and stat.S_IMODE(dest.stat().st_mode) == 0o755
    with pytest.raises(PackagingError, match="already exists; pass --force"):
        with staged_output(dest):
            pass
    with staged_output(dest, force=True) as stage:
        write_json(stage / "manifest.json", {"format": "votive-build/1", "second": True})
    assert json.loads((dest / "manifest.json").read_text())["second"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]  # no partial or old folders left


def test_force_never_replaces_a_folder_votive_did_not_write(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("precious")
    with pytest.raises(PackagingError, match="is not a votive build"):
        with staged_output(tmp_path / "home", force=True):
            pass
    assert (tmp_path / "home" / "notes.txt").read_text() == "precious"


def test_an_interrupted_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "build") as stage:
            (stage / "half.zip").write_bytes(b"PK")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


# --- the function's entry point ----------------------------------------------------------------------------


def test_lambda_paths_are_read_relative_to_the_tree(tmp_path):
    assert lambda_root({"LAMBDA_TASK_ROOT": "/var/task"}) == Path("/")
    assert lambda_root({"LAMBDA_TASK_ROOT": str(tmp_path / "var" / "task")}) == tmp_path
    assert lambda_root({}) == Path("/")
    assert local_model({"placement": "layer", "path": "/opt/model/m"}, tmp_path, {}) == tmp_path / "opt/model/m"


def test_entry_configuration_errors_are_config_faults(tmp_path):
    with pytest.raises(VotiveFault, match="Votive.ConfigError: .*cannot read the function's configuration"):
        read_config(tmp_path / "missing.json")
    (tmp_path / "c.json").write_text(json.dumps({"handler": "m.h", "model": {"placement": "ftp"}}))
    with pytest.raises(VotiveFault, match="placement 'ftp'; expected 'layer' or 's3'"):
        read_config(tmp_path / "c.json")
    model = {"placement": "s3", "uri": None, "files": [], "entry": "m"}
    with pytest.raises(VotiveFault, match="set VOTIVE_MODEL_S3=s3://bucket/prefix/"):
        local_model(model, tmp_path, {})


class RecordingHooks:
    """Stands in for Lambda's `snapshot_restore_py`: keeps what is registered."""

    def __init__(self):
        self.before, self.after = [], []

    def register_before_snapshot(self, hook):
        self.before.append(hook)

    def register_after_restore(self, hook):
        self.after.append(hook)


def test_entry_registers_the_snapstart_hooks_of_its_handler(tmp_path, monkeypatch):
    from votive.handlers import snapstart

    (tmp_path / "app_for_entry.py").write_text("seen = []\n\ndef handler(event, context):\n    seen.append(event)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(snapstart.WARM_EVENTS, "app_for_entry.handler", {"input": "warm"})
    (tmp_path / "votive_function.json").write_text(json.dumps(
        {"handler": "app_for_entry.handler", "model": {"placement": "layer", "path": "/opt/model/m"}}))
    hooks = RecordingHooks()
    handler = function_handler(str(tmp_path / "votive_function.py"), {"VOTIVE_MODEL": "m"}, snapshot_hooks=hooks)
    assert hooks.after == [snapstart.reseed] and len(hooks.before) == 1
    hooks.before[0]()  # Lambda calls it just before the snapshot: one warm-up request reaches the handler
    assert sys.modules["app_for_entry"].seen == [{"input": "warm"}] and handler.__module__ == "app_for_entry"
    # Where snapshot_restore_py cannot be imported (not SnapStart), nothing is registered and nothing fails.
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)
    assert function_handler(str(tmp_path / "votive_function.py"), {"VOTIVE_MODEL": "m"}) is handler


# --- the ASGI adapter (Modal) ------------------------------------------------------------------------------


def _asgi(app, method, path, body=b"", query=b""):
    sent, incoming = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [(b"content-type", b"application/json"), (b"X-Two", b"a"), (b"x-two", b"b")]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_asgi_requests_become_function_url_events():
    seen = []

    def handler(event, context):
        seen.append(event)
        return {"statusCode": 201, "headers": {"X-Answer": "yes"}, "body": json.dumps({"ok": True})}

    status, headers, body = _asgi(lambda_asgi_app(handler), "POST", "/v1/embeddings", b'{"input": "hi"}', b"a=1")
    assert status == 201 and headers[b"x-answer"] == b"yes" and json.loads(body) == {"ok": True}
    event = seen[0]
    assert event["version"] == "2.0" and event["rawPath"] == "/v1/embeddings" and event["rawQueryString"] == "a=1"
    assert event["requestContext"]["http"]["method"] == "POST" and event["headers"]["x-two"] == "a,b"
    assert event["isBase64Encoded"] and url_event({"path": "/health"}, b"")["body"] is None

    status, _, body = _asgi(lambda_asgi_app(handler, max_request_bytes=4), "POST", "/x", b"12345")
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large" and len(seen) == 1


def test_asgi_streams_a_streamed_answer_chunk_by_chunk():
    from votive.protocol.streaming import StreamingResponse

    closed = []

    def body():
        try:
            yield b"data: 1\n\n"
            yield b""
            yield b"data: 2\n\n"
        finally:
            closed.append(True)

    app = lambda_asgi_app(lambda event, context: StreamingResponse(200, {"Content-Type": "text/event-stream"}, body()))
    sent, incoming = [], [{"type": "http.request", "body": b"{}"}]

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}, receive, send))
    assert sent[0]["status"] == 200 and dict(sent[0]["headers"])[b"content-type"] == b"text/event-stream"
    assert [m["body"] for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""] and closed == [True]
    assert [m.get("more_body", False) for m in sent[1:]] == [True, True, False]


def test_asgi_serves_the_real_embedding_handler():
    from votive.handlers.embeddings import make_handler

    class Model:  # the encoder interface the handler uses
        model_id, dim, backend, max_seq_length = "fake", 3, "numpy", 8

        def encode(self, texts, batch_size):
            import numpy as np

            return np.ones((len(texts), 3), np.float32), 2 * len(texts)

    app = lambda_asgi_app(make_handler(Model()))
    status, _, body = _asgi(app, "POST", "/v1/embeddings", json.dumps({"input": ["a", "b"]}).encode())
    assert status == 200 and [d["embedding"] for d in json.loads(body)["data"]] == [[1.0] * 3] * 2
    status, _, body = _asgi(app, "POST", "/v1/embeddings", b"{not json")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json"
    status, _, body = _asgi(app, "GET", "/health")
    assert status == 200 and json.loads(body)["model"] == "fake"


# --- model files -------------------------------------------------------------------------------------------


def test_only_the_files_the_model_reads_are_packed(minilm_dir):
    model = collect_model(str(minilm_dir))
    names = [name for name, _ in model.files]
    assert "model.safetensors" in names and "tokenizer.json" in names and "1_Pooling/config.json" in names
    assert not any(n.endswith((".md", ".bin", ".onnx")) or n.startswith(".") for n in names), names
    assert model.kind.name == "encoder" and model.weights == "" and model.folder_name == "model"
    assert all(name.startswith("model/") for name, _ in model.layout)
    assert collect_model("minilm").folder_name == "all-MiniLM-L6-v2"


def test_a_lone_safetensors_file_is_refused(minilm_dir):
    with pytest.raises(PackagingError, match="name the model folder instead"):
        collect_model(str(minilm_dir / "model.safetensors"))


# --- the whole Lambda build, with the fake toolchain -------------------------------------------------------


# The smallest tokenizer.json votive.text.wordpiece runs itself (BERT WordPiece), and one it does not (BPE).
WORDPIECE_TOKENIZER = {"version": "1.0", "added_tokens": [], "pre_tokenizer": {"type": "BertPreTokenizer"},
                       "normalizer": None, "post_processor": None,
                       "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                                 "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0}}}
BPE_TOKENIZER = {"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}


def fake_model(folder: Path, weights_bytes: int, tokenizer: dict = WORDPIECE_TOKENIZER) -> Path:
    """A BERT-shaped model folder whose weights file is sparse: sizes matter to the build, contents do not."""
    folder.mkdir(parents=True)
    for name in ("config.json", "modules.json"):
        (folder / name).write_text("{}")
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "README.md").write_text("not packed")
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(weights_bytes)
    return folder


def test_lambda_build_bundles_small_weights_in_a_layer(tmp_path):
    fake = FakeToolchain()
    model = fake_model(tmp_path / "tiny-bert", 1000)
    result = build_lambda(str(model), tmp_path / "out", LambdaTarget(arch="x86_64", python="3.11"),
                          tools=fake.tools())
    manifest = result.manifest
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["manifest.json", "votive-function.zip", "votive-model-tiny-bert.zip",
                     "votive-runtime-python3.11-x86_64.zip"]
    assert manifest["target"] == {"runtime": "python3.11", "python": "3.11", "architecture": "x86_64",
                                  "machine": "x86_64", "os": "Amazon Linux 2", "glibc": "2.26", "wheel_abi": "cp311"}
    layer = manifest["runtime_layer"]
    assert layer["dependencies"] == {"numpy": "2.2.6"}  # no jinja2 for an encoder, no tokenizers for WordPiece
    assert set(layer["left_out"]) == {"huggingface-hub", "jinja2", "tokenizers"}
    assert layer["left_out"]["tokenizers"] == "its BERT WordPiece tokenizer is run by votive.text.wordpiece"
    assert layer["kernels"]["pinned_symbols"] == ["pthread_create@GLIBC_2.2.5", "pthread_sigmask@GLIBC_2.2.5"]
    assert manifest["weights"]["placement"] == "layer" and manifest["settings"]["handler"] == "votive_function.handler"
    for artifact in manifest["artifacts"]:
        assert artifact["sha256"] == files.sha256_file(tmp_path / "out" / artifact["name"])
    with zipfile.ZipFile(tmp_path / "out" / "votive-runtime-python3.11-x86_64.zip") as zf:
        members = zf.namelist()
    assert "python/votive/quant/libvotive.so" in members and "python/votive/handlers/entry.py" in members
    assert not [m for m in members if "/tests/" in m or m.endswith(".pyi") or "RECORD" in m]
    for never in ("cli.py", "emulators/runtime_api.py", "emulators/function_url.py", "builders/lambda_build.py",
                  "quant/kernel_build.py", "quant/csrc/selftest.c"):
        assert f"python/votive/{never}" not in members, never
    assert "python/votive/models/bert.py" in members and "python/votive/handlers/embeddings.py" in members
    for gpu_only in ("backends/cupy_backend.py", "backends/cuda_ops.py", "backends/cuda_linears.py",
                     "quant/cuda_kernels.py", "quant/nvrtc.py", "handlers/warm.py"):  # Lambda has no GPU
        assert f"python/votive/{gpu_only}" not in members, gpu_only
    with zipfile.ZipFile(tmp_path / "out" / "votive-function.zip") as zf:
        config = json.loads(zf.read("votive_function.json"))
        assert "handler = function_handler(__file__)" in zf.read("votive_function.py").decode()
    assert config == {"handler": "votive.handlers.embeddings.handler", "environment": {},
                      "model": {"placement": "layer", "path": "/opt/model/tiny-bert"}}
    with zipfile.ZipFile(tmp_path / "out" / "votive-model-tiny-bert.zip") as zf:
        assert sorted(zf.namelist()) == ["model/tiny-bert/config.json", "model/tiny-bert/model.safetensors",
                                         "model/tiny-bert/modules.json", "model/tiny-bert/tokenizer.json"]
    for call in fake.commands("fake-pip"):  # wheels for the target, never this machine's packages
        assert "--only-binary=:all:" in call and "--target" in call and sys.prefix not in " ".join(call)


def test_lambda_build_stages_weights_in_s3_when_they_do_not_fit(tmp_path):
    model = fake_model(tmp_path / "big-bert", 300 * 2**20)
    result = build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11", s3_uri="s3://bucket/models"),
                          tools=FakeToolchain().tools())
    manifest = result.manifest
    assert manifest["weights"]["placement"] == "s3" and "over Lambda's 250 MB" in manifest["weights"]["why"]
    assert [a["role"] for a in manifest["artifacts"]] == ["function", "runtime"]
    assert (tmp_path / "out/s3/big-bert/model.safetensors").stat().st_size == 300 * 2**20
    settings = manifest["settings"]
    assert settings["ephemeral_storage_mb"] == 512 and settings["environment"] == {
        "VOTIVE_MODEL_S3": "s3://bucket/models/"}
    with zipfile.ZipFile(tmp_path / "out/votive-function.zip") as zf:
        model_config = json.loads(zf.read("votive_function.json"))["model"]
    assert model_config["uri"] == "s3://bucket/models/" and model_config["entry"] == "big-bert"
    sizes = {f["name"]: f["size"] for f in model_config["files"]}
    assert sizes["big-bert/model.safetensors"] == 300 * 2**20 and "big-bert/README.md" not in sizes


def test_streaming_build_ships_an_executable_wrapper_and_says_so_in_the_manifest(tmp_path, smollm_gguf):
    from votive.builders.stream_wrapper import STREAM_RUNTIME

    result = build_lambda(str(smollm_gguf), tmp_path / "out", LambdaTarget(python="3.11", stream=True),
                          tools=FakeToolchain().tools())
    settings = result.manifest["settings"]
    assert settings["invoke_mode"] == "RESPONSE_STREAM" and settings["runtime"] == "python3.11"
    assert settings["environment"] == {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/votive-stream-runtime"}
    with zipfile.ZipFile(tmp_path / "out/votive-function.zip") as zf:
        info = zf.getinfo("votive-stream-runtime")
        script = zf.read(info).decode()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    assert modes["votive-stream-runtime"] == 0o755 and modes["votive_function.py"] == 0o644
    assert script.startswith("#!/bin/sh\n") and f"-m {STREAM_RUNTIME}" in script
    assert "lib/python3.11/site-packages" in script


def test_streaming_build_of_an_embedding_model_is_refused(tmp_path):
    model = fake_model(tmp_path / "tiny-bert", 1000)
    fake = FakeToolchain()
    with pytest.raises(PackagingError, match="--stream: .* votive.handlers.embeddings.handler, which answers whole"):
        build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11", stream=True), tools=fake.tools())
    assert fake.calls == [] and not (tmp_path / "out").exists()


def test_lambda_build_over_a_limit_explains_and_writes_nothing(tmp_path):
    model = fake_model(tmp_path / "big-bert", 300 * 2**20)
    with pytest.raises(PackagingError, match=r"over Lambda's 250.0 MB limit: stage the weights in S3 "):
        build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11", weights="layer"),
                     tools=FakeToolchain().tools())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big-bert"]

    fake = FakeToolchain()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(PackagingError, match="already exists"):
        build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11"), tools=fake.tools())
    assert fake.calls == []  # refused before any work


def test_cli_build_errors_are_one_line(tmp_path, capsys):
    from votive.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["build", "lambda", "minilm", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("votive: error: ") and "already exists; pass --force" in err and "\n" not in err
    assert main(["build", "modal", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# --- container image and Modal app, with the fake toolchain ------------------------------------------------


def test_the_tokenizers_library_goes_in_only_for_tokenizers_votive_does_not_run(tmp_path):
    model = fake_model(tmp_path / "bpe-bert", 1000, tokenizer=BPE_TOKENIZER)
    result = build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11"), tools=FakeToolchain().tools())
    layer = result.manifest["runtime_layer"]
    assert layer["dependencies"] == {"numpy": "2.2.6", "tokenizers": "0.23.3"}
    assert set(layer["left_out"]) == {"huggingface-hub", "jinja2"}  # the hub stays out: tokenizers' own need


def test_votive_requirements_with_extras():
    from votive.builders.dependencies import requirement_name, votive_requirements

    plain = [requirement_name(r) for r in votive_requirements({})]
    assert "numpy" in plain and "tokenizers" not in plain  # an extra, not a dependency
    assert [requirement_name(r) for r in votive_requirements({}, ["tokenizers"])] == plain + ["tokenizers"]
    with pytest.raises(PackagingError, match="votive declares no extra named 'tokenisers'"):
        votive_requirements({}, ["tokenisers"])


def test_tokenizer_library_need_by_model(tmp_path, minilm_dir):
    from gguf_bytes import gguf_file, kv_str

    from votive.builders.model_files import tokenizer_library_need

    assert tokenizer_library_need(minilm_dir) == (None, "its BERT WordPiece tokenizer is run by "
                                                        "votive.text.wordpiece")
    assert tokenizer_library_need(fake_model(tmp_path / "bpe", 10, tokenizer=BPE_TOKENIZER)) == (
        "tokenizer.json uses model type BPE; pre_tokenizer None", "")
    for vocabulary, need in (("gpt2", ("its GGUF vocabulary is 'gpt2': byte-level BPE merges run by tokenizers' "
                                       "BPE model", "")),
                             ("llama", (None, "its GGUF vocabulary ('llama') is run by votive.text.gguf_tokenizer"))):
        path = tmp_path / f"{vocabulary}.gguf"
        path.write_bytes(gguf_file([kv_str("tokenizer.ggml.model", vocabulary)]))
        assert tokenizer_library_need(path) == need


def test_gpu_image_context(tmp_path):
    from votive.builders.image_build import ImageTarget, build_image
    from votive.builders.report import image_summary

    fake = FakeToolchain()
    manifest = build_image("minilm", tmp_path / "gpu", ImageTarget(gpu=True, python="3.12"), tools=fake.tools())
    dockerfile = (tmp_path / "gpu" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04" in dockerfile and 'ENV VOTIVE_BACKEND="cupy"' in dockerfile
    assert dockerfile.index("COPY model/") < dockerfile.index("COPY python/") < dockerfile.index("COPY task/")
    # votive's kernels are compiled between the dependencies and the code (no GPU needed); warming cupy's own
    # cache is an opt-in step after the code (it needs a GPU)
    kernel_step = dockerfile.index("RUN /usr/bin/python3 -m votive.quant.cuda_kernels build --out /opt/votive-kernels")
    assert dockerfile.index("COPY python/") < kernel_step < dockerfile.index("COPY task/")
    assert 'ENV VOTIVE_CUDA_KERNELS="/opt/votive-kernels"' in dockerfile and "ARG VOTIVE_WARM=0" in dockerfile
    assert dockerfile.index("COPY task/") < dockerfile.index("votive.handlers.warm") < dockerfile.index("ENTRYPOINT")
    assert manifest["cuda_kernels"]["archs"] == ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]
    assert sorted(p.name for p in (tmp_path / "gpu/python/votive/quant/cusrc").iterdir()) == [
        "attention.cu", "common.cuh", "ggml_block_structs.cuh", "ggml_blocks.cuh", "norm.cu", "quant.cu"]
    assert set(manifest["runtime_layer"]["dependencies"]) == {
        "numpy", "awslambdaric", "simplejson", "snapshot-restore-py", "cupy-cuda12x", "fastrlock"}
    assert manifest["target"]["glibc"] == "2.39" and manifest["built"] is False
    for gpu_side in ("handlers/warm.py", "backends/cupy_backend.py", "backends/cuda_linears.py", "quant/nvrtc.py"):
        assert (tmp_path / "gpu/python/votive" / gpu_side).is_file(), gpu_side
    config = json.loads((tmp_path / "gpu/task/votive_function.json").read_text())
    assert config["environment"] == {"VOTIVE_BACKEND": "cupy"}
    assert config["model"] == {"placement": "layer", "path": "/opt/model/all-MiniLM-L6-v2"}
    assert "no Docker engine here; build it with: docker build --platform linux/amd64 -t votive-" in image_summary(
        manifest, tmp_path / "gpu")
    with pytest.raises(PackagingError, match="x86_64 only"):
        build_image("minilm", tmp_path / "arm", ImageTarget(gpu=True, arch="arm64"), tools=fake.tools())
    with pytest.raises(PackagingError, match="offers Python 3.12, not 3.11"):
        build_image("minilm", tmp_path / "old", ImageTarget(gpu=True, python="3.11"), tools=fake.tools())


def test_gpu_image_context_compiles_the_cuda_kernels_as_its_dockerfile_says(tmp_path):
    """The context's kernel step, run here as the Dockerfile runs it (its Python tree on the path, no GPU), leaves
    a binary for every module and GPU generation that the context's own votive finds at run time."""
    from votive.builders.image_build import ImageTarget, build_image
    from votive.quant import nvrtc

    try:
        library = nvrtc.load().path  # stands in for the base image's libnvrtc.so.12
    except Exception as err:
        pytest.skip(f"NVRTC cannot be loaded here: {err}")
    # a file the subprocess can open (a soname may have loaded here only because a wheel's copy was loaded before)
    library = next((c for c in nvrtc.candidates() if Path(c).is_file()), library)
    build_image("minilm", tmp_path / "gpu", ImageTarget(gpu=True, python="3.12"), tools=FakeToolchain().tools())
    step = next(line for line in (tmp_path / "gpu/Dockerfile").read_text().splitlines()
                if "votive.quant.cuda_kernels" in line)
    out = tmp_path / "opt" / "votive-kernels"
    # RUN /usr/bin/python3 -m ... --out /opt/votive-kernels, by this Python without site-packages (so without this
    # checkout's editable votive): the context's tree alone, as in the image
    argv = [str(out) if a == "/opt/votive-kernels" else a for a in step.split()[1:]]
    argv[0:1] = [sys.executable, "-S"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "gpu/python"), "VOTIVE_NVRTC": library}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    check = ("import json, sys; from votive.quant import cuda_kernels as k; "
             "print(json.dumps([k.__file__] + [[p.name for p in k.candidates(sys.argv[1], m, cc)] "
             "for m in k.MODULES for cc in (75, 86, 90, 120)]))")
    done = subprocess.run([sys.executable, "-S", "-c", check, str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    found = json.loads(done.stdout)
    assert found[0].startswith(str(tmp_path / "gpu/python/votive/quant/"))  # the context's votive, not this one
    assert found[1:] == [["sm_75.cubin", "compute_75.ptx"], ["sm_86.cubin", "sm_80.cubin", "compute_75.ptx"],
                         ["sm_90.cubin", "compute_75.ptx"], ["compute_75.ptx"]] * 3


def test_warm_without_a_gpu_exits_saying_why(capsys):
    from votive.handlers.warm import main

    assert main("/nonexistent/votive_function.py") == 1
    assert "no GPU visible to the build" in capsys.readouterr().err


def test_modal_gpu_app_with_a_volume_constructs_offline(tmp_path):
    pytest.importorskip("modal")
    from votive.builders.modal_build import ModalTarget, build_modal
    from votive.builders.report import modal_summary

    out = tmp_path / "modal"
    manifest = build_modal("minilm", out, ModalTarget(gpu="H100", weights="volume", max_containers=2),
                           tools=FakeToolchain().tools())
    assert [r.split("==")[0] for r in manifest["app"]["requirements"]] == ["numpy", "cupy-cuda12x", "nvidia-cuda-nvrtc-cu12"]
    assert (out / "votive/quant/cusrc/quant.cu").is_file()
    source = (out / "modal_app.py").read_text()
    assert "enable_memory_snapshot=True" in source and "@modal.enter(snap=True)" in source
    assert "@modal.enter(snap=False)" in source and 'WEIGHTS = \'volume\'' in source
    program = f"""
import json, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {str(out)!r})
import modal_app
spec = modal_app.app.registered_functions["Endpoint.*"]._spec_
print(json.dumps({{"gpu": spec.gpus, "volumes": sorted(str(k) for k in spec.volumes),
                  "entrypoints": sorted(modal_app.app.registered_entrypoints)}}))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts == {"gpu": "H100", "volumes": ["/model"], "entrypoints": ["upload_weights"]}
    text = modal_summary(manifest, out)
    assert "modal run modal_app.py::upload_weights" in text and "GPU H100" in text
    with pytest.raises(PackagingError, match="GPU 'V100'; choose one of T4, L4, A10G, A100, H100"):
        build_modal("minilm", tmp_path / "x", ModalTarget(gpu="V100"), tools=FakeToolchain().tools())


def test_lambda_summary_reads_the_manifest(tmp_path):
    from votive.builders.report import lambda_summary

    model = fake_model(tmp_path / "big-bert", 300 * 2**20)
    result = build_lambda(str(model), tmp_path / "out", LambdaTarget(python="3.11"), tools=FakeToolchain().tools())
    text = lambda_summary(result.manifest, result.out)
    assert "votive-runtime-python3.11-x86_64.zip" in text and "S3, fetched to /tmp/votive-model at init" in text
    assert "aws s3 cp --recursive s3/ s3://BUCKET/PREFIX/" in text
    assert "left out: huggingface-hub, jinja2, tokenizers" in text


def test_a_hugging_face_decoder_folder_is_built_for_the_generation_handler(tmp_path):
    """A folder whose config.json names a ...ForCausalLM class is a decoder: the generation handler, jinja2 kept."""
    model = fake_model(tmp_path / "tiny-llama", 1000, BPE_TOKENIZER)
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "modules.json").unlink()  # a sentence-transformers pipeline over a decoder embeds (Qwen3-Embedding)
    (model / "tokenizer_config.json").write_text("{}")
    files = collect_model(str(model))
    assert files.kind.handler == "votive.handlers.generation.handler" and files.weights == ""
    assert "tokenizer_config.json" in dict(files.files) and "jinja2" not in files.unused_requirements


def test_votive_files_are_the_serving_packages_whole(tmp_path):
    from votive.builders.runtime_tree import votive_files

    package = tmp_path / "votive"
    for name in ("__init__.py", "errors.py", "cli/__init__.py", "handlers/__init__.py", "handlers/h.py",
                 "protocol/payload_v2.py", "emulators/function_url.py", "builders/lambda_build.py",
                 "quant/kernels.py", "quant/kernel_build.py", "quant/csrc/dispatch.c", "quant/cusrc/quant.cu",
                 "testing/synthetic.py", "handlers/__pycache__/h.cpython-311.pyc"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    chosen = [rel for rel, _ in votive_files(package)]
    assert chosen == ["__init__.py", "errors.py", "handlers/__init__.py", "handlers/h.py", "protocol/payload_v2.py",
                      "quant/kernels.py"]
