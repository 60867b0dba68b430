"""Model files staged in S3, fetched into local storage when a function starts, checked, and kept for later starts.

Runs inside the deployed function (Lambda's init phase), so it imports nothing heavy: boto3 (part of Lambda's
Python runtime) only when no client is passed in.

Each file is fetched with parallel ranged GETs (`Range: bytes=a-b`) written straight to their offsets in a file of
the final size: one S3 connection gives some tens of MB/s, several together fill the function's network link.
Every file's size and sha256 must match what the build recorded, so an object changed or truncated in the bucket
fails init with a message instead of serving a wrong model. A finished fetch leaves a marker; a later process in
the same execution environment (/tmp survives between them) finds it and fetches nothing.

    >>> parse_s3_uri("s3://models/minilm/")
    S3Location(bucket='models', prefix='minilm/')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from votive.errors import ModelSourceError

PART_BYTES = 16 * 1024 * 1024  # one ranged GET; large enough that request overhead is small
WORKERS = 8  # concurrent GETs; Lambda's network link saturates at about this many
MARKER = ".votive-complete"
_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class StagedFile:
    """A model file as the build recorded it: its path in the model folder, size and sha256."""

    name: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, obj: dict) -> "StagedFile":
        return cls(str(obj["name"]), int(obj["size"]), str(obj["sha256"]))


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    def key(self, name: str) -> str:
        return self.prefix + name

    def uri(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket[/prefix]` -> S3Location; the prefix gets a trailing '/' (files are keys beneath it)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ModelSourceError(f"expected an S3 URI like s3://bucket/prefix/, found {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket or "/" in bucket:
        raise ModelSourceError(f"S3 URI {uri!r} names no bucket; expected s3://bucket/prefix/")
    prefix = prefix.strip("/")
    return S3Location(bucket, prefix + "/" if prefix else "")


def fetch_model(uri: str, files: Sequence[StagedFile], folder: Path, *, client=None, workers: int = WORKERS,
                part_bytes: int = PART_BYTES, log: Callable[[str], None] | None = None) -> Path:
    """Make the staged model files local under `folder` and return it.

    Args:
        uri: where the files were uploaded, `s3://bucket/prefix/` (file names are keys under the prefix).
        files: the files and their recorded sizes and sha256.
        folder: where to keep them, e.g. /tmp/votive-model. A marker there records which files (by digest) were
            fetched and checked; files of another model or location are fetched again over them.
        client: a boto3 S3 client (or anything with its `get_object`); default `boto3.client("s3")`.
        workers: concurrent ranged GETs.
        part_bytes: bytes per GET.

    Raises:
        ModelSourceError: too little space, an object missing or unreadable, or a size or sha256 that does not match
            the build's record. The message names the object and says what to do.
    """
    from votive.files import check_member_name, sha256_file  # names: kept inside `folder`

    location = parse_s3_uri(uri)
    for f in files:
        check_member_name(f.name, "staged model files")
    digest = _digest(location, files)
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file() and marker.read_text() == digest:
        return folder  # fetched and checked by an earlier process in this environment
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    _check_space(folder, sum(f.size for f in files), location)
    client = client if client is not None else _default_client(workers)
    partials = {f.name: folder / f"{f.name}.partial" for f in files}
    try:
        _download(client, location, files, partials, workers, part_bytes)
        for f in files:
            actual = sha256_file(partials[f.name])
            if actual != f.sha256:
                raise ModelSourceError(
                    f"{location.uri(f.name)}: sha256 {actual}, but the build recorded {f.sha256}: the object changed "
                    "since the build; upload the build's files again or rebuild"
                )
            os.replace(partials[f.name], folder / f.name)
    finally:
        for path in partials.values():
            path.unlink(missing_ok=True)
    marker.write_text(digest)
    if log:
        log(f"votive: fetched {len(files)} model files ({sum(f.size for f in files) / 2**20:.1f} MB) from {uri}")
    return folder


def _download(client, location: S3Location, files: Sequence[StagedFile], partials: dict[str, Path], workers: int,
              part_bytes: int) -> None:
    handles = {}
    try:
        for f in files:
            partials[f.name].parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(partials[f.name], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            handles[f.name] = fd
            os.ftruncate(fd, f.size)
        parts = [(f, start, min(start + part_bytes, f.size) - 1) for f in files for start in range(0, f.size, part_bytes)]
        failed = threading.Event()
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="votive-s3") as pool:
            futures = [pool.submit(_fetch_part, client, location, f, a, b, handles[f.name], failed) for f, a, b in parts]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    failed.set()  # the parts not started yet return at once
                    for other in futures:
                        other.cancel()
                    raise future.exception()
    finally:
        for fd in handles.values():
            os.close(fd)


def _fetch_part(client, location: S3Location, f: StagedFile, start: int, end: int, fd: int,
                failed: threading.Event) -> None:
    if failed.is_set():
        return
    key = location.key(f.name)
    try:
        response = client.get_object(Bucket=location.bucket, Key=key, Range=f"bytes={start}-{end}")
    except Exception as err:  # botocore's ClientError, or no network: say which object and why
        raise ModelSourceError(_explain(err, location.uri(f.name))) from err
    total = _total_size(response.get("ContentRange"))
    if total is not None and total != f.size:
        raise ModelSourceError(f"{location.uri(f.name)} is {total} bytes, but the build recorded {f.size}: upload "
                               "the build's files again or rebuild")
    body, offset = response["Body"], start
    try:
        while offset <= end:
            chunk = body.read(min(_READ_BYTES, end + 1 - offset))
            if not chunk:
                break
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
    finally:
        body.close()
    if offset != end + 1:
        raise ModelSourceError(f"{location.uri(f.name)}: bytes {start}-{end} ended after {offset - start} bytes "
                               f"(the object is shorter than the {f.size} bytes the build recorded)")


def _explain(err: Exception, uri: str) -> str:
    response = getattr(err, "response", None)  # botocore's ClientError carries the S3 error code here
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"{uri}: no such object; upload the build's s3/ folder there (aws s3 cp --recursive s3/ <uri>)"
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return f"{uri}: access denied; allow the function's role s3:GetObject on it"
    if code == "NoSuchBucket":
        return f"{uri}: no such bucket; set VOTIVE_MODEL_S3 to where the files were uploaded"
    if code == "InvalidRange":
        return f"{uri}: the object is shorter than the build recorded; upload the build's files again"
    return f"{uri}: cannot fetch ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"


def _total_size(content_range: str | None) -> int | None:
    """'bytes 0-99/1000' -> 1000."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _check_space(folder: Path, needed: int, location: S3Location) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ModelSourceError(
            f"{location.uri()}: the model needs {needed / 2**20:.0f} MB in {folder} but only {free / 2**20:.0f} MB "
            f"are free; raise the function's ephemeral storage to at least {needed / 2**20 + 64:.0f} MB"
        )


def _digest(location: S3Location, files: Sequence[StagedFile]) -> str:
    record = [location.uri()] + sorted([f.name, f.size, f.sha256] for f in files)
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


def _default_client(workers: int):
    import boto3  # in Lambda's Python runtime; imported only when a model is staged in S3
    from botocore.config import Config

    return boto3.client("s3", config=Config(max_pool_connections=max(10, workers)))
