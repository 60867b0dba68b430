"""The S3 side of a deployment: the artifact bucket (found, checked to be in the right region, or created) and
the uploads, which skip any object already there with the same sha256.

Object keys are named after their contents (`votive/NAME/<sha256 prefix>/function.zip`), so a re-deploy of an
unchanged build uploads nothing and a changed artifact never overwrites the one a running function came from.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from votive.client.aws_session import AwsClients, aws_errors, error_code
from votive.deploy.aws.build_reader import Artifact
from votive.deploy.journal import DeployRun
from votive.errors import DeployError

# S3's GetBucketLocation answers None for us-east-1 and the legacy "EU" for eu-west-1.
_LEGACY_LOCATIONS = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}


@dataclass(frozen=True)
class BucketCheck:
    name: str
    exists: bool  # False: the deploy creates it


def check_bucket(clients: AwsClients, name: str, region: str) -> BucketCheck:
    """Find out whether `name` can hold this deployment's artifacts, without changing anything.

    Raises:
        DeployError: the bucket is in another region, or belongs to someone else (or we may not read it).
    """
    s3 = clients.s3
    with aws_errors(f"check bucket {name}"):
        try:
            location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
        except Exception as exc:
            code = error_code(exc)
            if code == "NoSuchBucket":
                return BucketCheck(name, exists=False)
            if code in ("AccessDenied", "403", "AllAccessDisabled"):
                raise DeployError(f"bucket {name} exists but this account may not use it (it may belong to "
                                  f"another account); pass another --bucket") from None
            raise
    found = _LEGACY_LOCATIONS.get(location, location)
    if found != region:
        raise DeployError(f"bucket {name} is in {found}, but the function goes to {region}; Lambda reads code "
                          f"only from a bucket in its own region: pass a bucket in {region}, or --region {found}")
    return BucketCheck(name, exists=True)


def create_bucket(run: DeployRun, name: str, region: str) -> None:
    """Create the bucket (private: S3's default blocks public access), recorded so destroy can remove it."""
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    run.clients.s3.create_bucket(Bucket=name, **kwargs)
    run.created({"kind": "bucket", "name": name})


def artifact_key(prefix: str, artifact: Artifact) -> str:
    """`prefix/<first 16 hex of sha256>/<file name>`."""
    return f"{prefix}{artifact.sha256[:16]}/{artifact.path.name}"


def upload(run: DeployRun, bucket: str, key: str, artifact: Artifact) -> bool:
    """Put `artifact` at s3://bucket/key unless an object of the same sha256 is there; True if it was sent.

    The object carries the sha256 in its metadata (`x-amz-meta-sha256`), which is what makes "already there"
    checkable without downloading it.
    """
    s3 = run.clients.s3
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("ContentLength") == artifact.size and head.get("Metadata", {}).get("sha256") == artifact.sha256:
            return False
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
    lock, sent = threading.Lock(), [0]
    label = f"{artifact.path.name} to s3://{bucket}/{key}"

    def progress(n: int) -> None:  # s3transfer calls this from its worker threads
        with lock:
            sent[0] += n
            run.ui.progress(label, sent[0], artifact.size)

    s3.upload_file(str(artifact.path), bucket, key, ExtraArgs={"Metadata": {"sha256": artifact.sha256}},
                   Callback=progress)
    if artifact.size == 0:
        run.ui.progress(label, 0, 0)
    run.created({"kind": "object", "bucket": bucket, "key": key})
    return True
