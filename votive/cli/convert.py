"""`votive convert`: a Hugging Face decoder folder written as a GGUF file that llama.cpp and votive load."""

from __future__ import annotations

import argparse
import sys


def add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="Hugging Face decoder or BERT encoder folder (config.json, "
                                                         "safetensors, tokenizer.json)")
    parser.add_argument("--to", required=True, metavar="FILE", help="the GGUF file to write")
    # A plain string, not argparse choices: a bad type gets one line naming the choices, exit 2.
    parser.add_argument("--type", default="q8_0", metavar="TYPE",
                        help="matrix type: q8_0 (default), f16, f32, or q4_k_m (llama.cpp's Q4_K_M mixture: the "
                             "types and blocks its llama-quantize writes)")
    parser.add_argument("--force", action="store_true", help="replace an existing FILE")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from votive.builders.gguf_convert import convert_folder

    result = convert_folder(args.folder, args.to, args.type, overwrite=args.force)
    print(f"votive: wrote {result.path} ({result.architecture}, {result.type_name}): {result.gguf_bytes:,} bytes "
          f"from {result.folder_bytes:,} bytes of safetensors", file=sys.stderr)
    if result.fallbacks:
        first, stored = next(iter(result.fallbacks.items()))
        print(f"votive: {len(result.fallbacks)} matrices stored in another type, their rows not whole "
              f"{result.type_name} blocks (first: {first} as {stored})", file=sys.stderr)
    return 0
