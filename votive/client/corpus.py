"""The rows of a corpus for `votive map`: JSONL, CSV or Parquet, a local file or an `s3://` object, read as a
stream (never the whole corpus in memory).

Every row becomes a `Row`: its position in the file (0-based, counting rows, not lines: blank JSONL lines are
skipped), its id (the `id_field` column, else the position as text) and its values (the row as a dict). An S3
object is read through `S3RangeReader`, ranged GETs behind a buffered file, so that Parquet's footer-first
reads and JSONL / CSV's front-to-back reads both work without a download.

Example:
    >>> rows = list(open_corpus("docs.jsonl"))                               # doctest: +SKIP
    >>> rows[0]
    Row(index=0, id='0', values={'text': 'hello'})
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from votive.errors import InputError

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_READ_BUFFER = 8 * 1024 * 1024  # bytes per ranged GET
_PARQUET_BATCH = 4096  # rows per Parquet record batch


@dataclass(frozen=True)
class Row:
    index: int  # position in the corpus, 0-based
    id: str  # the id column's value as text, else str(index)
    values: dict[str, Any]  # the row's columns


def corpus_format(source: str, fmt: str | None = None) -> str:
    """`fmt` if given, else the format the file name says; InputError naming the choices otherwise."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    name = source.split("?")[0].lower()
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return kind
    raise InputError(f"{source}: cannot tell the format from the name; pass --format {'|'.join(FORMATS)}")


def open_corpus(source: str, *, fmt: str | None = None, id_field: str | None = None, s3_client=None,
                start: int = 0) -> Iterator[Row]:
    """The rows of `source` (a path or s3://bucket/key) from row `start` on.

    Raises:
        InputError: the file is missing, a row is malformed (naming its line), or Parquet without pyarrow.
    """
    kind = corpus_format(source, fmt)
    raw = _open_binary(source, s3_client)
    try:
        if source.lower().endswith(".gz"):
            import gzip

            raw = gzip.GzipFile(fileobj=raw)
        records = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[kind](raw, source)
        for index, values in enumerate(records):
            if index < start:
                continue
            if id_field is None:
                row_id = str(index)
            elif id_field not in values or values[id_field] is None:
                raise InputError(f"{source}: row {index} has no {id_field!r} (the --id-field)")
            else:
                row_id = str(values[id_field])
            yield Row(index, row_id, values)
    finally:
        raw.close()


def _open_binary(source: str, s3_client):
    if source.startswith("s3://"):
        bucket, key = split_s3_uri(source)
        return io.BufferedReader(S3RangeReader(s3_client, bucket, key), buffer_size=_READ_BUFFER)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    return path.open("rb")


def _jsonl(raw, source: str) -> Iterator[dict]:
    for number, line in enumerate(raw, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            raise InputError(f"{source}: line {number} is not JSON ({err})") from None
        if not isinstance(value, dict):
            raise InputError(f"{source}: line {number} is a JSON {type(value).__name__}, expected an object")
        yield value


def _csv(raw, source: str) -> Iterator[dict]:
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    try:
        yield from csv.DictReader(text)
    except (csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"{source}: not readable as CSV ({err})") from None
    finally:
        text.detach()


def _parquet(raw, source: str) -> Iterator[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{source}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(raw)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
            yield from batch.to_pylist()
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{source}: not readable as Parquet ({err})") from None


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); InputError for anything else."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise InputError(f"{uri}: expected s3://BUCKET/KEY")
    return bucket, key


class S3RangeReader(io.RawIOBase):
    """A seekable read-only file over one S3 object: each read is a ranged GET of what is asked."""

    def __init__(self, client, bucket: str, key: str):
        from votive.client.aws_session import aws_errors

        self.client, self.bucket, self.key, self.pos = client, bucket, key, 0
        with aws_errors(f"read s3://{bucket}/{key}"):
            self.size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        from votive.client.aws_session import aws_errors

        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        with aws_errors(f"read s3://{self.bucket}/{self.key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key,
                                          Range=f"bytes={self.pos}-{self.pos + want - 1}")["Body"].read()
        buffer[: len(body)] = body
        self.pos += len(body)
        return len(body)
