"""Lambda's size and resource limits, checked against what a build made, with what to do when one is exceeded.

Each check returns a `LimitCheck` that goes into the manifest as is. An "error" means Lambda would refuse the
deployment and the build stops with the message; a "warning" means it deploys, but not the simplest way (a zip
over 50 MB must go through S3).

    >>> direct_upload("votive-function.zip", 10_000).ok
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from votive.builders.targets import DEFAULT_MEMORY_MB, LAMBDA_LIMITS, MB, LambdaLimits


@dataclass(frozen=True)
class LimitCheck:
    name: str  # which limit
    limit: int
    value: int
    unit: str  # "bytes", "MB", "layers"
    ok: bool
    severity: str  # "error" (Lambda refuses) or "warning" (possible, another way)
    message: str  # what was found; when not ok, by how much and what to do

    def to_json(self) -> dict:
        return asdict(self)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def direct_upload(name: str, zipped: int, limits: LambdaLimits = LAMBDA_LIMITS) -> LimitCheck:
    """A zip above 50 MB cannot be sent in the API call itself; it deploys from S3."""
    ok = zipped <= limits.direct_upload_zip
    message = f"{name}: {_mb(zipped)} zipped, within the {_mb(limits.direct_upload_zip)} of a direct upload"
    if not ok:
        message = (f"{name}: {_mb(zipped)} zipped, {_mb(zipped - limits.direct_upload_zip)} over the "
                   f"{_mb(limits.direct_upload_zip)} Lambda takes in a direct upload: upload it to S3 and create the "
                   "layer or function from there (e.g. aws lambda publish-layer-version --content "
                   "S3Bucket=BUCKET,S3Key=KEY); the deploy command does this itself")
    return LimitCheck(f"direct upload: {name}", limits.direct_upload_zip, zipped, "bytes", ok, "warning", message)


def unzipped_total(parts: dict[str, int], limits: LambdaLimits = LAMBDA_LIMITS) -> LimitCheck:
    """Function code plus all its layers, unzipped, must stay within 250 MB."""
    total = sum(parts.values())
    listing = ", ".join(f"{name} {_mb(size)}" for name, size in parts.items())
    ok = total <= limits.unzipped_total
    message = f"function and layers unzip to {_mb(total)} ({listing}), within {_mb(limits.unzipped_total)}"
    if not ok:
        message = (f"function and layers unzip to {_mb(total)} ({listing}), {_mb(total - limits.unzipped_total)} "
                   f"over Lambda's {_mb(limits.unzipped_total)} limit: stage the weights in S3 (--weights s3), build "
                   "a container image (votive build image, up to 10 GB), or serve a quantized model")
    return LimitCheck("unzipped function and layers", limits.unzipped_total, total, "bytes", ok, "error", message)


def layer_count(layers: int, limits: LambdaLimits = LAMBDA_LIMITS) -> LimitCheck:
    ok = layers <= limits.layers
    message = f"{layers} layers, within {limits.layers}" if ok else (
        f"{layers} layers, {layers - limits.layers} over Lambda's {limits.layers}: merge layers")
    return LimitCheck("layers per function", limits.layers, layers, "layers", ok, "error", message)


def ephemeral_storage(needed_mb: int, limits: LambdaLimits = LAMBDA_LIMITS) -> LimitCheck:
    """Weights fetched from S3 live in /tmp, which Lambda sizes from 512 MB to 10 GB."""
    top = limits.ephemeral_storage_mb[1]
    ok = needed_mb <= top
    message = f"/tmp needs {needed_mb} MB for the fetched weights, within {top} MB" if ok else (
        f"/tmp needs {needed_mb} MB for the fetched weights, {needed_mb - top} MB over Lambda's {top} MB: build a "
        "container image (votive build image) or serve a quantized model")
    return LimitCheck("ephemeral storage (/tmp)", top, needed_mb, "MB", ok, "error", message)


def memory(needed_mb: int, limits: LambdaLimits = LAMBDA_LIMITS) -> LimitCheck:
    top = limits.memory_mb[1]
    ok = needed_mb <= top
    message = f"the model needs about {needed_mb} MB of memory, within {top} MB" if ok else (
        f"the model needs about {needed_mb} MB of memory, {needed_mb - top} MB over Lambda's {top} MB: serve a "
        "quantized model, or a GPU image elsewhere (votive build image --gpu, votive build modal)")
    return LimitCheck("memory", top, needed_mb, "MB", ok, "error", message)


def suggested_memory_mb(weights_bytes: int) -> int:
    """Memory for a function serving these weights: the mapped weights (their pages count against the function's
    memory), about 512 MB for Python, numpy, tokenizer and activations, and at least DEFAULT_MEMORY_MB (more than
    one full vCPU)."""
    need = weights_bytes / MB + 512
    return max(DEFAULT_MEMORY_MB, 64 * math.ceil(need / 64))


def suggested_ephemeral_mb(weights_bytes: int, limits: LambdaLimits = LAMBDA_LIMITS) -> int:
    """/tmp for weights fetched from S3: the files plus 10% and 64 MB of slack, at least Lambda's 512 MB default."""
    return max(limits.ephemeral_storage_mb[0], 64 * math.ceil((weights_bytes * 1.1 / MB + 64) / 64))
