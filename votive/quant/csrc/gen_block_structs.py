"""Write the C and CUDA block structs of GGML's quantized formats from votive/quant/ggml_types.py, the one table.

    python votive/quant/csrc/gen_block_structs.py     # rewrites csrc/ggml_block_structs.h, cusrc/ggml_block_structs.cuh

Run it after changing the table; tests/test_block_layout.py fails while a checked-in header differs from what this
writes. Structs are named as in ggml-common.h (block_q4_0, block_q4_K, block_iq2_xxs, ...), a format's elements per
block is QK_<the same suffix>, and each struct's size is asserted to be the table's bytes per block (C's
_Static_assert; CUDA's static_assert, under NVRTC and the CPU emulator's g++). As the table's fields add up to that
size with each one aligned (ggml_types checks both), the compilers lay every field out at the table's offset.
"""

from __future__ import annotations

import sys
from pathlib import Path

from votive.quant.ggml_types import GGML_TYPES, GGMLType

CSRC = Path(__file__).resolve().parent
C_HEADER = CSRC / "ggml_block_structs.h"
CUDA_HEADER = CSRC.parent / "cusrc" / "ggml_block_structs.cuh"

# Element type of a field (ggml_types.FIELD_TYPES) -> its C spelling, and its CUDA one (common.cuh's typedefs:
# NVRTC has no <stdint.h>).
C_TYPES = {"half": "ggml_half", "f32": "float", "u8": "uint8_t", "i8": "int8_t", "u16": "uint16_t", "i16": "int16_t"}
CUDA_TYPES = {"half": "ggml_half", "f32": "float", "u8": "u8", "i8": "i8", "u16": "u16", "i16": "i16"}

ABOUT = """the block struct of every GGML quantized format, as ggml-common.h (ggml-org/llama.cpp)
declares it, with its size asserted.

GENERATED from votive/quant/ggml_types.py by votive/quant/csrc/gen_block_structs.py: do not edit; change the table
and run the script (tests/test_block_layout.py checks that this file is what it writes). The fields add up to the
asserted size, so there is no padding and every field is at the byte its comment gives. Weights are read in place
at any alignment: take a field's bytes at its offset, never through a pointer to the struct."""


def suffix(t: GGMLType) -> str:
    """ggml's spelling of a format in its struct names: q4_0, q4_K (K-quants keep the capital), iq2_xxs."""
    return t.name[:-1].lower() + "K" if t.name.endswith("_K") else t.name.lower()


def _structs(types: dict[str, str], comment: str, gap: str, open_struct: str, close_struct: str,
             assertion: str) -> list[str]:
    """Each quantized format's QK_ constant, struct and size assertion, in the given language's spellings; `gap`
    goes between a field and its comment."""
    lines = []
    for t in GGML_TYPES.values():
        if not t.quantized:
            continue
        name = f"block_{suffix(t)}"
        declarations = [f"{types[f.type]} {f.name}" + (f"[{f.count}]" if f.count > 1 else "") + ";" for f in t.fields]
        width = max(map(len, declarations))
        lines += ["", comment.format(f"{t.name}, GGML type {t.id}: {t.block_size} elements in {t.block_bytes} bytes"),
                  f"#define QK_{suffix(t)} {t.block_size}", open_struct.format(name)]
        for declaration, f in zip(declarations, t.fields):
            where = f"byte {f.offset}" if f.nbytes == 1 else f"bytes {f.offset}..{f.offset + f.nbytes - 1}"
            lines.append(f"    {declaration:<{width}}{gap}" + comment.format(where))
        message = f"{name} is not the {t.block_bytes} bytes of {t.name} in ggml_types.py"
        lines += [close_struct.format(name), assertion.format(f'sizeof({name}) == {t.block_bytes}, "{message}"')]
    return lines


def c_header() -> str:
    """The text of csrc/ggml_block_structs.h."""
    about = "\n".join(f" * {line}".rstrip() for line in ABOUT.splitlines()).removeprefix(" * ")
    lines = [f"/* ggml_block_structs.h: {about}\n */", "#ifndef VT_GGML_BLOCK_STRUCTS_H",
             "#define VT_GGML_BLOCK_STRUCTS_H", "", "#include <stddef.h> /* offsetof */", "#include <stdint.h>", "",
             "typedef uint16_t ggml_half; /* the bits of an IEEE half float */"]
    lines += _structs(C_TYPES, "/* {} */", " ", "typedef struct {{", "}} {};", "_Static_assert({});")
    lines += ["", "#endif /* VT_GGML_BLOCK_STRUCTS_H */"]
    return "\n".join(lines) + "\n"


def cuda_header() -> str:
    """The text of cusrc/ggml_block_structs.cuh."""
    about = "\n".join(f"// {line}".rstrip() for line in ABOUT.splitlines()).removeprefix("// ")
    lines = [f"// ggml_block_structs.cuh: {about}", "#pragma once", '#include "common.cuh"', "",
             "typedef u16 ggml_half;  // the bits of an IEEE half float"]
    lines += _structs(CUDA_TYPES, "// {}", "  ", "struct {} {{", "}};", "static_assert({});")
    return "\n".join(lines) + "\n"


OUTPUTS = {C_HEADER: c_header, CUDA_HEADER: cuda_header}


def main() -> int:
    for path, text in OUTPUTS.items():
        path.write_text(text())
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
