"""Where `votive map` writes: a folder (local or `s3://bucket/prefix/`) of shards, `manifest.json` and
`failures.jsonl`.

Nothing half-written is ever visible. A local file is written under a temporary name and renamed; an S3 object
exists only once its upload has completed (one PUT, or a completed multipart upload). The manifest is rewritten
the same way after every shard, so after a crash (kill -9 included) it lists exactly the shards that are whole,
each with its row range, row count, and every file's size and sha256: a rerun of the same job skips those and
redoes the rest. The manifest holds no times, so an interrupted and resumed run ends with the same bytes as an
uninterrupted one. Its `job` is what makes two runs the same job; a folder holding another job's manifest is
refused rather than mixed into.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from votive.client.corpus import split_s3_uri
from votive.errors import InputError

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
MANIFEST_VERSION = 1


class LocalFolder:
    """A local output folder."""

    def __init__(self, path: str):
        self.root = Path(path)
        self.where = str(self.root)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / name)

    def append(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / name).open("ab") as f:
            f.write(data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class S3Folder:
    """An `s3://bucket/prefix/` output folder; `append` rewrites the object (failures are few)."""

    def __init__(self, uri: str, client):
        self.bucket, prefix = split_s3_uri(uri)
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.client = client
        self.where = f"s3://{self.bucket}/{self.prefix}"
        self._lock = threading.Lock()

    def read(self, name: str) -> bytes | None:
        from votive.client.aws_session import aws_errors, is_not_found

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except Exception as exc:  # botocore's ClientError; anything else is reported by aws_errors below
            if is_not_found(exc):
                return None
            with aws_errors(f"read {self.where}{name}"):
                raise

    def write(self, name: str, data: bytes) -> None:
        import io

        from votive.client.aws_session import aws_errors

        with aws_errors(f"write {self.where}{name}"):  # upload_fileobj completes its multipart upload or aborts it
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.prefix + name)

    def append(self, name: str, data: bytes) -> None:
        with self._lock:
            self.write(name, (self.read(name) or b"") + data)

    def delete(self, name: str) -> None:
        from votive.client.aws_session import aws_errors

        with aws_errors(f"delete {self.where}{name}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)


def open_folder(where: str, s3_client=None):
    return S3Folder(where, s3_client) if where.startswith("s3://") else LocalFolder(where)


class Manifest:
    """The job and its finished shards, kept true in `folder` as shards finish.

    Args:
        folder: a LocalFolder or S3Folder.
        job: what defines the job (target, input, task, fields, batch and shard sizes, request parameters).
    """

    def __init__(self, folder, job: dict):
        self.folder, self.job = folder, job
        self.shards: dict[str, dict] = {}
        self._lock = threading.Lock()
        old = folder.read(MANIFEST)
        if old is None:
            return
        try:
            data = json.loads(old)
            same = data["job"] == job
            shards = data["shards"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{folder.where}: {MANIFEST} is not a votive map manifest; choose another --out")
        if not same:
            changed = sorted(k for k in set(job) | set(data["job"]) if job.get(k) != data["job"].get(k))
            raise InputError(f"{folder.where} holds another job's output (differs in {', '.join(changed)}); "
                             f"rerun with the same arguments to resume, or choose another --out")
        self.shards = {name: s for name, s in shards.items() if self._intact(s)}

    def done(self, name: str) -> bool:
        return name in self.shards

    def record(self, name: str, first_row: int, files: dict[str, bytes]) -> None:
        """Write a finished shard's files, then the manifest that names them."""
        for file_name, data in files.items():
            self.folder.write(file_name, data)
        count = _row_count(files)
        entry = {"rows": [first_row, first_row + count], "count": count,
                 "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
        with self._lock:
            self.shards[name] = entry
            self._write()

    def write(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        data = {"version": MANIFEST_VERSION, "job": self.job,
                "shards": {name: self.shards[name] for name in sorted(self.shards)},
                "rows": sum(s["count"] for s in self.shards.values())}
        self.folder.write(MANIFEST, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    def _intact(self, shard: dict) -> bool:
        """Every file of the shard is there with its recorded size and sha256 (else it is redone)."""
        for name, want in shard.get("files", {}).items():
            data = self.folder.read(name)
            if data is None or len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
                return False
        return bool(shard.get("files"))


def _row_count(files: dict[str, bytes]) -> int:
    """Rows in a shard: the entries of its ids file."""
    ids = next(d for n, d in files.items() if n.endswith(".ids.json"))
    return len(json.loads(ids))
