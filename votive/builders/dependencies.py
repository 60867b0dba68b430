"""votive's runtime dependencies, installed for a target platform from wheels, never from this machine.

pip does the downloading and unpacking (`pip install --target --platform ... --only-binary=:all:`), one round at a
time with `--no-deps`: votive decides what goes in, so that a dependency it never imports on the target does not
come along because something declares it. After each round the installed distributions' own requirements are
read (METADATA, `Requires-Dist`, markers evaluated for the target); those still missing are installed in the next
round, and one that must be left out has to be listed in `LEFT_OUT` with its reason, or the build stops.

    >>> requirement_name("tokenizers>=0.15")
    'tokenizers'
"""

from __future__ import annotations

import email.parser
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import votive
from votive.builders.targets import Architecture, manylinux_platforms
from votive.builders.tools import BuildTools
from votive.errors import PackagingError

# Distributions pip would install that a built function never imports, with the reason. They are left out of
# every artifact; `verify_closure` makes sure nothing else needs them.
LEFT_OUT: dict[str, str] = {
    "huggingface-hub": "imported only to download Hub ids (hf:org/name); a built function loads its model from its "
                       "own files (layer, image, S3 fetch), and tokenizers imports it only in from_pretrained",
}

_ROUNDS = 8  # a dependency chain deeper than this means something is wrong


@dataclass(frozen=True)
class DependencyTarget:
    """Where the dependencies will run: interpreter version, CPU, C library."""

    python: str  # "3.12"
    arch: Architecture
    glibc: tuple[int, int]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values on the target, to evaluate `; python_version < "3.12"` and the like."""
        return {
            "python_version": self.python,
            "python_full_version": self.python + ".0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "implementation_version": self.python + ".0",
            "os_name": "posix",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.arch.machine,
            "platform_release": "",
            "platform_version": "",
            "extra": "",
        }


@dataclass(frozen=True)
class Distribution:
    """An installed distribution, as its METADATA describes it."""

    name: str  # normalized: lower case, runs of -_. as '-'
    version: str
    requires: tuple[str, ...]  # Requires-Dist lines


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise PackagingError(f"cannot read the requirement {requirement!r}")
    return normalize(match.group(1))


def votive_requirements(left_out: Mapping[str, str], extras: Iterable[str] = ()) -> list[str]:
    """votive's own declared dependencies, plus those of the named extras ("tokenizers"), minus `left_out`.

    They come from the pyproject.toml beside the package when votive runs from a source tree (the modules packed
    are that tree's, and an editable install's metadata can be older than it), else from the installed metadata.

    Raises:
        PackagingError: votive declares no extra of that name, or its metadata is missing.
    """
    extras = list(extras)
    pyproject = Path(votive.__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        optional = project.get("optional-dependencies", {})
        unknown = [e for e in extras if e not in optional]
        declared = list(project["dependencies"]) + [r for e in extras if e in optional for r in optional[e]]
    else:
        try:
            lines = metadata.requires("votive") or []
        except metadata.PackageNotFoundError:
            raise PackagingError("votive's package metadata is missing: install votive to build") from None
        from packaging.requirements import Requirement

        declared, found = [], set()
        for line in lines:
            marker = Requirement(line).marker
            if marker is None or "extra" not in str(marker):
                declared.append(line)
                continue
            for extra in extras:  # `; extra == "tokenizers"`: the extra's own requirement
                if marker.evaluate({"extra": extra}):
                    declared.append(line.partition(";")[0].strip())
                    found.add(extra)
        unknown = [e for e in extras if e not in found]
    if unknown:
        raise PackagingError(f"votive declares no extra named {unknown[0]!r}")
    return [r for r in declared if "extra" not in r.partition(";")[2] and requirement_name(r) not in left_out]


def pip_install_args(target: DependencyTarget, site: Path, requirements: Iterable[str], *,
                     constraints: Path | None = None) -> list[str]:
    """Arguments after `pip` that install `requirements` (no dependencies) for `target` into `site`."""
    args = ["install", "--target", str(site), "--no-deps", "--no-compile", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", target.python,
            "--abi", target.abi, "--abi", "abi3", "--abi", "none",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--upgrade"]
    for platform in manylinux_platforms(target.arch, target.glibc):
        args += ["--platform", platform]
    if constraints is not None:
        args += ["--constraint", str(constraints)]
    return args + sorted(requirements)


def install_for_target(tools: BuildTools, target: DependencyTarget, site: Path, requirements: Iterable[str], *,
                       left_out: Mapping[str, str] = LEFT_OUT, constraints: Path | None = None
                       ) -> dict[str, Distribution]:
    """Install `requirements` and what they need (except `left_out`) for `target` into the folder `site`.

    Returns:
        The installed distributions by normalized name.

    Raises:
        PackagingError: pip failed (no wheel for the target, usually: the message has pip's words), or a
            requirement cannot be met by what was installed.
    """
    site.mkdir(parents=True, exist_ok=True)
    wanted = list(requirements)
    for _ in range(_ROUNDS):
        tools.log(f"pip: installing {', '.join(sorted(wanted))} for {target.abi} {target.arch.machine}")
        tools.check([*tools.pip, *pip_install_args(target, site, wanted, constraints=constraints)],
                    f"install {', '.join(sorted(wanted))} for Python {target.python} on {target.arch.name} "
                    f"(manylinux, glibc <= {target.glibc[0]}.{target.glibc[1]})")
        installed = installed_distributions(site)
        wanted = missing_requirements(installed, target, left_out)
        if not wanted:
            return installed
    raise PackagingError(f"dependencies still missing after {_ROUNDS} rounds of pip: {', '.join(wanted)}")


def installed_distributions(site: Path) -> dict[str, Distribution]:
    """The distributions installed in `site`, from their `*.dist-info/METADATA`."""
    found = {}
    for meta in sorted(Path(site).glob("*.dist-info/METADATA")):
        message = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"), headersonly=True)
        name = message.get("Name")
        if not name:
            raise PackagingError(f"{meta}: no Name field")
        found[normalize(name)] = Distribution(normalize(name), message.get("Version", "?"),
                                              tuple(message.get_all("Requires-Dist") or ()))
    return found


def missing_requirements(installed: Mapping[str, Distribution], target: DependencyTarget,
                         left_out: Mapping[str, str]) -> list[str]:
    """Requirements of installed distributions that apply on `target` and are not installed yet.

    Raises:
        PackagingError: an installed distribution's version does not satisfy what another one asks for.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    environment = target.marker_environment()
    missing = []
    for dist in installed.values():
        for line in dist.requires:
            try:
                requirement = Requirement(line)
            except InvalidRequirement as err:
                raise PackagingError(f"{dist.name} {dist.version}: cannot read its requirement {line!r} ({err})")
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue  # an extra, or a platform or Python version the target is not
            name = normalize(requirement.name)
            if name in left_out:
                continue
            have = installed.get(name)
            if have is None:
                missing.append(str(requirement).partition(";")[0].strip())
            elif not requirement.specifier.contains(have.version, prereleases=True):
                raise PackagingError(
                    f"{dist.name} {dist.version} needs {requirement.name}{requirement.specifier}, but "
                    f"{have.version} was installed for the target; pin a matching version with --constraint"
                )
    return sorted(set(missing))
