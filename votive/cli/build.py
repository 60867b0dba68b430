"""`votive build`: deployable artifacts for Lambda (layers, function zip), a container image, or a Modal app."""

from __future__ import annotations

import argparse
import sys

from votive.cli.arguments import add_modal_gpu, non_negative_int, positive_int


def add_build(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(title="targets", metavar="TARGET", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", metavar="MODEL", help="model folder, weight file, Hub id, pkg:NAME or alias")
    common.add_argument("--out", help="output folder (default build/<model>-<target>)")
    common.add_argument("--force", action="store_true", help="replace an earlier build in --out")
    # A plain string, not argparse choices: a bad type gets one line naming the choices, exit 2. On every
    # target so that image and modal refuse it with that one line too, not argparse's usage text.
    common.add_argument("--quantize", metavar="TYPE",
                        help="lambda only: convert a Hugging Face decoder folder to one GGUF file of TYPE (q8_0, "
                             "f16, f32, q4_k_m) and ship that instead of its weights; a BERT encoder also takes "
                             "int8 (its matrices int8, one scale per row) or panels (its float32 matrices stored as "
                             "votive's product reads them: a cold start packs nothing; what a float BERT folder gets "
                             "without --quantize)")

    lam = targets.add_parser("lambda", parents=[common], help="Lambda layers, function zip and manifest",
                             description="Build Lambda layers (runtime, model), a function zip and manifest.json.")
    lam.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="CPU (default x86_64)")
    lam.add_argument("--python", choices=("3.11", "3.12", "3.13"), default="3.12", help="runtime (default 3.12)")
    lam.add_argument("--weights", choices=("auto", "layer", "s3"), default="auto",
                     help="a layer when function + layers fit in 250 MB unzipped, else S3 (default auto)")
    lam.add_argument("--s3-uri", metavar="s3://BUCKET/PREFIX/", help="where S3-staged weights will be uploaded")
    lam.add_argument("--constraint", metavar="FILE", help="pip constraints file pinning dependency versions")
    lam.add_argument("--stream", action="store_true",
                     help="stream answers (generation): votive's runtime loop via a wrapper script, RESPONSE_STREAM")
    lam.set_defaults(run=run_build, target="lambda")

    image = targets.add_parser("image", parents=[common], help="container image build context (Dockerfile + app)",
                               description="Write a container image build context; build it if Docker is here.")
    image.add_argument("--gpu", action="store_true", help="CUDA base image, cupy, kernel cache warmed at build")
    image.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="CPU (default x86_64)")
    image.add_argument("--python", default="3.12", help="the image's Python (default 3.12)")
    image.add_argument("--tag", help="image name (default votive-<model>)")
    image.add_argument("--stream", action="store_true",
                       help="entry point votive's runtime loop, which streams answers (generation), not awslambdaric")
    image.set_defaults(run=run_build, target="image")

    modal = targets.add_parser("modal", parents=[common], help="a Modal app module",
                               description="Write a Modal app serving the model over HTTP.")
    add_modal_gpu(modal)
    modal.add_argument("--python", default="3.12", help="the image's Python (default 3.12)")
    modal.add_argument("--weights", choices=("image", "volume"), default="image",
                       help="bake the weights into the image, or keep them in a modal.Volume (default image)")
    modal.add_argument("--min-containers", type=non_negative_int, default=0, metavar="N", help="kept warm (default 0)")
    modal.add_argument("--max-containers", type=positive_int, default=10, metavar="N", help="at most (default 10)")
    modal.set_defaults(run=run_build, target="modal")


def run_build(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from votive.builders import report
    from votive.builders.tools import BuildTools

    from votive.errors import InputError

    if args.quantize is not None and args.target != "lambda":
        raise InputError(f"--quantize is supported by `votive build lambda` only, not {args.target}: convert first "
                         f"(votive convert FOLDER --to model.gguf --type {args.quantize}) and build the .gguf")
    tools = BuildTools(log=lambda line: print(f"votive: {line}", file=sys.stderr, flush=True))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", args.model).strip("-.") or "model"
    out = Path(args.out or Path("build") / f"{slug}-{args.target}")
    if args.target == "lambda":
        from votive.builders.lambda_build import LambdaTarget, build_lambda

        target = LambdaTarget(arch=args.arch, python=args.python, weights=args.weights, s3_uri=args.s3_uri,
                              constraints=Path(args.constraint) if args.constraint else None, stream=args.stream,
                              quantize=args.quantize)
        result = build_lambda(args.model, out, target, force=args.force, tools=tools)
        print(report.lambda_summary(result.manifest, result.out))
    elif args.target == "image":
        from votive.builders.image_build import ImageTarget, build_image

        target = ImageTarget(gpu=args.gpu, python=args.python, arch=args.arch, tag=args.tag, stream=args.stream)
        print(report.image_summary(build_image(args.model, out, target, force=args.force, tools=tools), out))
    else:
        from votive.builders.modal_build import ModalTarget, build_modal

        target = ModalTarget(gpu=args.gpu, python=args.python, weights=args.weights,
                             min_containers=args.min_containers, max_containers=args.max_containers)
        print(report.modal_summary(build_modal(args.model, out, target, force=args.force, tools=tools), out))
    return 0
