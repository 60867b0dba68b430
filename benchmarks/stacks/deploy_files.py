"""List the installed files a set of distributions needs, from pip's metadata; runs in the venv measured.

    python deploy_files.py ROOT[,ROOT...] [EXCLUDE[,EXCLUDE...]]

Follows Requires-Dist from the roots through everything installed, skipping requirements that only apply
to an extra and distributions named in EXCLUDE (their own dependencies too, unless something else needs
them). Prints {"site_packages": DIR, "dists": {name: [paths relative to DIR]}}. Paths outside
site-packages (console scripts) and compiled bytecode are left out: a deploy package needs neither.
A rough measure by design: an environment marker other than `extra` counts as true when the distribution
is installed, which is how pip decided it in this venv anyway.
"""

import importlib.metadata as metadata
import json
import re
import sys
import sysconfig
from pathlib import Path


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(dist):
    """Names this distribution requires outside any extra."""
    names = []
    for req in dist.requires or []:
        requirement, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        names.append(normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)))
    return names


def closure(roots, exclude):
    installed = {normalise(d.metadata["Name"]): d for d in metadata.distributions()}
    missing = [r for r in roots if r not in installed]
    if missing:
        raise SystemExit(f"deploy_files: not installed in {sys.prefix}: {', '.join(missing)}")
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in exclude or name not in installed:
            continue
        seen.add(name)
        todo.extend(requirement_names(installed[name]))
    return {name: installed[name] for name in sorted(seen)}


def files_of(dist, site_packages):
    out = []
    for entry in dist.files or []:
        path = Path(dist.locate_file(entry)).resolve()
        if path.suffix == ".pyc" or not path.is_file() or not path.is_relative_to(site_packages):
            continue
        out.append(str(path.relative_to(site_packages)))
    return out


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: deploy_files.py ROOT[,ROOT...] [EXCLUDE[,EXCLUDE...]]")
    roots = [normalise(n) for n in sys.argv[1].split(",")]
    exclude = {normalise(n) for n in sys.argv[2].split(",")} if len(sys.argv) == 3 else set()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    dists = closure(roots, exclude)
    listing = {name: files_of(dist, site_packages) for name, dist in dists.items()}
    print(json.dumps({"site_packages": str(site_packages), "dists": listing}))


if __name__ == "__main__":
    main()
