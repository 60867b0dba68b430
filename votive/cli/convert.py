"""`votive convert`: a Hugging Face decoder folder written as a GGUF file that llama.cpp and votive load."""

from __future__ import annotations

import argparse
import sys


def add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="Hugging Face decoder folder (config.json, safetensors, "
                                                         "tokenizer.json)")
    parser.add_argument("--to", required=True, metavar="FILE", help="the GGUF file to write")
    # A plain string, not argparse choices: a refused type (q4_k_m) gets one line saying why, exit 2.
    parser.add_argument("--type", default="q8_0", metavar="TYPE",
                        help="matrix type: q8_0 (default), f16 or f32 (q4_k_m is not available: no Q6_K quantizer)")
    parser.add_argument("--force", action="store_true", help="replace an existing FILE")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from votive.builders.gguf_convert import convert_folder

    result = convert_folder(args.folder, args.to, args.type, overwrite=args.force)
    print(f"votive: wrote {result.path} ({result.architecture}, {result.type_name}): {result.gguf_bytes:,} bytes "
          f"from {result.folder_bytes:,} bytes of safetensors", file=sys.stderr)
    if result.fallbacks:
        print(f"votive: {len(result.fallbacks)} matrices stored as F16, their rows not whole {result.type_name} "
              f"blocks (first: {result.fallbacks[0]})", file=sys.stderr)
    return 0
