"""Published on-demand prices, in one table with the date they were read, and the cost of a run from them.

Lambda (us-east-1, first tier: the first 6 billion x86 / 7.5 billion arm64 GB-seconds of a month; the free tier
is not deducted): duration per GB-second by architecture, and requests per million. Modal: per second of a GPU
(the container's CPU and memory are billed on top, at CPU_CORE_S and MEMORY_GIB_S). Every figure can be
overridden (`votive map --price-gb-s`, `--price-gpu-s`): prices differ by region and change.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_DATE = "2025-06"  # when these were read from aws.amazon.com/lambda/pricing and modal.com/pricing
LAMBDA_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}  # USD per GB-second
LAMBDA_REQUEST = 0.20 / 1_000_000  # USD per request
MODAL_GPU_S = {"T4": 0.000164, "L4": 0.000222, "A10G": 0.000306, "A100": 0.000583, "H100": 0.001097}  # USD/s
MODAL_CPU_CORE_S = 0.0000131  # USD per physical core second
MODAL_MEMORY_GIB_S = 0.00000222  # USD per GiB second


@dataclass(frozen=True)
class CostEstimate:
    usd: float
    basis: str  # how it was computed, in one line

    def per_million(self, rows: int) -> float | None:
        return self.usd / rows * 1e6 if rows else None


def lambda_cost(*, seconds: float, requests: int, memory_mb: int, arch: str = "x86_64",
                price_gb_s: float | None = None, billed: bool = True) -> CostEstimate:
    """Duration (billed seconds when `billed`, else measured ones) x memory x price, plus requests."""
    price = price_gb_s if price_gb_s is not None else LAMBDA_GB_S[arch]
    usd = seconds * memory_mb / 1024 * price + requests * LAMBDA_REQUEST
    source = "billed duration from Lambda's REPORT lines" if billed else "measured request time (an upper bound)"
    return CostEstimate(usd, f"{seconds:.1f} s {source} x {memory_mb} MB x ${price:.10f}/GB-s ({arch}) + "
                             f"{requests} requests x ${LAMBDA_REQUEST * 1e6:.2f}/M; prices of {PRICES_DATE}")


def modal_cost(*, seconds: float, gpu: str | None, price_gpu_s: float | None = None) -> CostEstimate:
    """GPU seconds x price (CPU and memory not counted: they depend on the container's settings)."""
    if price_gpu_s is None:
        if gpu not in MODAL_GPU_S:
            return CostEstimate(0.0, f"unknown: no price for GPU {gpu!r}; pass --price-gpu-s")
        price_gpu_s = MODAL_GPU_S[gpu]
    return CostEstimate(seconds * price_gpu_s, f"{seconds:.1f} GPU s (measured) x ${price_gpu_s}/s ({gpu}); "
                                               f"prices of {PRICES_DATE}, CPU and memory not included")
