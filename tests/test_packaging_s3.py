"""The init-time fetch of S3-staged weights, against a moto S3 server on 127.0.0.1 with the real MiniLM files.

boto3 talks real HTTP to moto; a thin wrapper around the client counts the ranged GETs so the tests can see the
parallel parts and the reuse of files already fetched.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from votive.errors import ModelSourceError
from votive.files import sha256_file
from votive.handlers.s3_weights import MARKER, StagedFile, fetch_model, parse_s3_uri

BUCKET = "packaging-s3-tests"
PART = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A boto3 client on a fresh moto server, with a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


class CountingClient:
    """Passes get_object through to boto3 and records each Range asked for (from several threads)."""

    def __init__(self, client):
        self.client = client
        self.ranges: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def get_object(self, **kwargs):
        with self.lock:
            self.ranges.append((kwargs["Key"], kwargs["Range"]))
        return self.client.get_object(**kwargs)


@pytest.fixture(scope="module")
def staged(s3, minilm_dir) -> list[StagedFile]:
    """The MiniLM files uploaded under minilm/, as a build records them."""
    files = []
    for name in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        path = minilm_dir / name
        s3.upload_file(str(path), BUCKET, f"minilm/{name}")
        files.append(StagedFile(name, path.stat().st_size, sha256_file(path)))
    return files


def test_parallel_ranged_fetch_gives_the_same_bytes_and_is_reused(s3, staged, minilm_dir, tmp_path):
    client = CountingClient(s3)
    folder = fetch_model(f"s3://{BUCKET}/minilm", staged, tmp_path / "model", client=client, workers=4,
                         part_bytes=PART)
    for f in staged:
        assert (folder / f.name).read_bytes() == (minilm_dir / f.name).read_bytes()
    weights = next(f for f in staged if f.name == "model.safetensors")
    parts = [r for key, r in client.ranges if key == "minilm/model.safetensors"]
    assert len(parts) == -(-weights.size // PART) and f"bytes=0-{PART - 1}" in parts
    assert f"bytes={(len(parts) - 1) * PART}-{weights.size - 1}" in parts
    assert not list(folder.rglob("*.partial")) and (folder / MARKER).is_file()

    again = CountingClient(s3)  # a later process in the same environment: nothing is fetched
    assert fetch_model(f"s3://{BUCKET}/minilm/", staged, tmp_path / "model", client=again) == folder
    assert again.ranges == []


def test_a_changed_object_fails_the_sha256_check_and_leaves_nothing(s3, staged, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="changed/config.json", Body=b'{"hidden_size": 1}' + b" " * 594)
    config = next(f for f in staged if f.name == "config.json")
    assert config.size == 612
    with pytest.raises(ModelSourceError, match=r"changed/config.json: sha256 [0-9a-f]{64}, but the build recorded"):
        fetch_model(f"s3://{BUCKET}/changed/", [config], tmp_path / "m", client=s3)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []


def test_missing_objects_and_wrong_sizes_name_the_object_and_the_fix(s3, staged, tmp_path):
    with pytest.raises(ModelSourceError, match=f"s3://{BUCKET}/nowhere/config.json: no such object; upload"):
        fetch_model(f"s3://{BUCKET}/nowhere/", staged[:1], tmp_path / "a", client=s3)
    wrong = StagedFile("config.json", 9999, staged[0].sha256)
    with pytest.raises(ModelSourceError, match="config.json is 612 bytes, but the build recorded 9999"):
        fetch_model(f"s3://{BUCKET}/minilm/", [wrong], tmp_path / "b", client=s3)
    assert not list((tmp_path / "b").rglob("*.partial"))


def test_too_little_space_says_how_much_ephemeral_storage_to_set(tmp_path):
    huge = StagedFile("model.safetensors", 1 << 50, "0" * 64)
    with pytest.raises(ModelSourceError, match=r"only \d+ MB are free; raise the function's ephemeral storage"):
        fetch_model("s3://b/p/", [huge], tmp_path / "m", client=object())


def test_s3_uris_and_unsafe_names_are_checked():
    assert parse_s3_uri("s3://bucket").prefix == "" and parse_s3_uri("s3://b/a/b/").key("x") == "a/b/x"
    for bad in ("http://bucket/x", "s3://", "s3:///key"):
        with pytest.raises(ModelSourceError, match="S3 URI|expected an S3 URI"):
            parse_s3_uri(bad)
    with pytest.raises(Exception, match="member name '../../etc/passwd'"):
        fetch_model("s3://b/p/", [StagedFile("../../etc/passwd", 1, "0" * 64)], Path("/tmp/never"), client=object())
