"""What `votive build` prints when it is done: the artifacts, their sizes against the limits, and what to run next.

Everything here reads a manifest (the dict written to manifest.json), so the same text can be produced again from
an earlier build.
"""

from __future__ import annotations

from pathlib import Path


def _mb(n: int) -> str:
    """Sizes as Lambda's quotas count them (MB = 2**20 bytes); small files in kB."""
    return f"{n / 2**10:7.1f} kB" if n < 100 * 2**10 else f"{n / 2**20:7.1f} MB"


def lambda_summary(manifest: dict, out: Path) -> str:
    target, settings, weights = manifest["target"], manifest["settings"], manifest["weights"]
    layer = manifest["runtime_layer"]
    lines = [f"votive: built {manifest['model']['model_id']} for Lambda {target['runtime']} on {target['architecture']} "
             f"({target['os']}, glibc {target['glibc']}) in {out}", "",
             f"  {'artifact':58} {'zipped':>10} {'unzipped':>10}  deploys as"]
    for a in manifest["artifacts"]:
        lines.append(f"  {a['name']:58} {_mb(a['zipped_bytes'])} {_mb(a['unzipped_bytes'])}  {a['deploys_as']}")
    if weights["placement"] == "s3":
        lines.append(f"  {weights['s3']['folder'] + '/':58} {'':>10} {_mb(weights['bytes'])}  S3, fetched to "
                     f"{weights['s3']['fetched_to']} at init")
    deps = ", ".join(f"{k} {v}" for k, v in layer["dependencies"].items())
    kernels = layer["kernels"]
    lines += ["",
              f"  dependencies: {deps}; left out: {', '.join(layer['left_out']) or 'nothing'}",
              f"  kernels: libvotive.so for {kernels['machine']}, needs glibc {kernels['glibc_required']}, "
              f"self-test {kernels['selftest']}",
              f"  slimmed {layer['slimmed']['files']} files ({layer['slimmed']['bytes'] / 2**20:.1f} MB), stripped "
              f"{layer['stripped']['files']} libraries, {layer['bytecode']['files']} .pyc files "
              f"({layer['bytecode']['interpreter'] or 'none'})",
              f"  weights: {weights['why']}",
              *_quantized_lines(weights.get("quantized")),
              f"  settings: handler {settings['handler']}, memory {settings['memory_mb']} MB, /tmp "
              f"{settings['ephemeral_storage_mb']} MB, timeout {settings['timeout_s']} s"]
    problems = [c for c in manifest["limits"] if not c["ok"]]
    lines.append("  limits: " + ("all within Lambda's" if not problems else f"{len(problems)} to note"))
    for warning in manifest["warnings"]:
        lines.append(f"  note: {warning}")
    if weights["placement"] == "s3":
        lines.append(f"  next: {weights['s3']['upload']} and set VOTIVE_MODEL_S3 on the function")
    return "\n".join(lines)


def _quantized_lines(quantized: dict | None) -> list[str]:
    """What --quantize saved: the folder's files that would have been packed, against the one GGUF file."""
    if quantized is None:
        return []
    before, after = quantized["from"]["bytes"], quantized["to"]["bytes"]
    saved = f"saved {before - after:,} bytes, {100 * (before - after) / before:.0f}%" if before else "nothing to save"
    return [f"  quantized: {quantized['type']}, {len(quantized['from']['files'])} files {before:,} bytes -> "
            f"{quantized['to']['file']} {after:,} bytes ({saved})"]


def image_summary(manifest: dict, out: Path) -> str:
    image = manifest["image"]
    lines = [f"votive: wrote the image build context for {manifest['model']['model_id']} "
             f"({manifest['target']['base']}, {manifest['target']['architecture']}) in {out}",
             f"  layers: model {_mb(image['layers']['model']).strip()}, python {_mb(image['layers']['python']).strip()}, "
             f"task {_mb(image['layers']['task']).strip()}; entry point {' '.join(image['entrypoint'])} "
             f"{' '.join(image['cmd'])}"]
    if manifest.get("built"):
        lines.append(f"  built the image {image['tag']}")
    else:
        lines.append(f"  no Docker engine here; build it with: {manifest['build_command']}")
    return "\n".join(lines)


def modal_summary(manifest: dict, out: Path) -> str:
    app = manifest["app"]
    where = f"volume {app['volume']}" if app["weights"] == "volume" else "the image"
    lines = [f"votive: wrote the Modal app {app['name']} for {manifest['model']['model_id']} in {out}",
             f"  GPU {app['gpu'] or 'none (CPU)'}, Python {app['python']}, weights in {where}, memory snapshot on, "
             f"containers {app['min_containers']}..{app['max_containers']}",
             f"  pinned: {', '.join(app['requirements'])}"]
    if app["weights"] == "volume":
        lines.append(f"  first: cd {out} && modal run modal_app.py::upload_weights")
    lines.append(f"  deploy: cd {out} && {manifest['deploy_command']}")
    return "\n".join(lines)
