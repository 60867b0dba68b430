"""The record of what a deployment created, kept in a JSON file so that `destroy`, `status` and `logs` find it.

One file per deployment: `.votive/deployments/NAME.json` under the directory the deploy ran in (like Chalice's
`.chalice/deployed/`), so a project's deployments travel with the project; `--state-dir` points elsewhere. The
file is rewritten (to a temporary file, then renamed) after every resource a deploy creates, so that even a
deploy killed part-way leaves a record `votive destroy` can clean up from.

Example:
    >>> store = StateStore(Path("/tmp/votive-doc-state"))
    >>> record = {"name": "demo", "provider": "aws", "resources": []}
    >>> store.save(record); store.load("demo")["provider"]
    'aws'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from votive.errors import DeployError

DEFAULT_DIR = Path(".votive") / "deployments"
FORMAT = "votive-deployment/1"


class StateStore:
    """Deployment records in one folder, one JSON file per deployment name.

    Args:
        directory: the folder (created on first save).
    """

    def __init__(self, directory: Path = DEFAULT_DIR):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> dict:
        """The record of deployment `name`.

        Raises:
            DeployError: there is none here, or the file is not a record votive wrote.
        """
        path = self.path(name)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise DeployError(f"no deployment named {name!r} is recorded in {self.directory} (recorded here: "
                              f"{known}); run from the folder you deployed from, or pass --state-dir") from None
        except (OSError, ValueError) as exc:
            raise DeployError(f"{path}: cannot read the deployment record: {exc}") from None
        if not isinstance(record, dict) or record.get("name") != name or "provider" not in record:
            raise DeployError(f"{path}: not a votive deployment record for {name!r}")
        return record

    def save(self, record: dict) -> Path:
        """Write `record` atomically (temporary file, then rename); returns the file's path."""
        record = {"format": FORMAT, **record}
        path = self.path(record["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record, sort_keys=True)
        return path

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))


def write_json_atomic(path: Path, content: dict, *, sort_keys: bool = False) -> None:
    """Write `content` as indented JSON to a temporary file beside `path`, then rename it into place: a reader
    sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(content, out, indent=2, sort_keys=sort_keys)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
