"""`votive convert`: a Hugging Face decoder or BERT folder written as a GGUF file that llama.cpp and votive load, or a
BERT folder as a folder with int8 or float32-panel matrices (votive.builders.bert_folders)."""

from __future__ import annotations

import argparse
import sys


def add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="Hugging Face decoder or BERT encoder folder (config.json, "
                                                         "safetensors, tokenizer.json)")
    parser.add_argument("--to", required=True, metavar="OUT", help="the GGUF file to write (--type int8 or panels: a "
                                                                   "folder)")
    # A plain string, not argparse choices: a bad type gets one line naming the choices, exit 2.
    parser.add_argument("--type", default="q8_0", metavar="TYPE",
                        help="matrix type: q8_0 (default), f16, f32, or q4_k_m (llama.cpp's Q4_K_M mixture: the "
                             "types and blocks its llama-quantize writes); int8 (BERT encoders: a model folder "
                             "with int8 matrices and one scale per row, what quantize='int8' runs); panels (BERT "
                             "encoders: a model folder with its float32 matrices laid out as votive's product reads "
                             "them, so a load packs nothing)")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from votive.builders.gguf_convert import convert_folder

    if args.type in ("int8", "panels"):
        from votive.builders.bert_folders import convert_bert_int8, convert_bert_panels

        convert = convert_bert_int8 if args.type == "int8" else convert_bert_panels
        done = convert(args.folder, args.to, overwrite=args.force)
        print(f"votive: wrote {done.path} (bert, {args.type}: {done.matrices} matrices): model.safetensors "
              f"{done.weights_bytes:,} bytes from {done.folder_bytes:,} bytes of safetensors", file=sys.stderr)
        return 0
    result = convert_folder(args.folder, args.to, args.type, overwrite=args.force)
    print(f"votive: wrote {result.path} ({result.architecture}, {result.type_name}): {result.gguf_bytes:,} bytes "
          f"from {result.folder_bytes:,} bytes of safetensors", file=sys.stderr)
    if result.fallbacks:
        first, stored = next(iter(result.fallbacks.items()))
        print(f"votive: {len(result.fallbacks)} matrices stored in another type, their rows not whole "
              f"{result.type_name} blocks (first: {first} as {stored})", file=sys.stderr)
    return 0
