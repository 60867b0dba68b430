"""Print the character tables of votive/text/graphemes.py: Grapheme_Cluster_Break, Extended_Pictographic and
Indic_Conjunct_Break values over all code points, read from the `regex` module's Unicode data (UAX #29).

tests/test_unigram.py checks the result where it shows in `tokenizers` (the Precompiled normalizer's grapheme
rule) for every code point. Needs `regex` 2025.11.3 (Unicode 17.0, the version tokenizers 0.23.3's unicode-segmentation
1.13.3 follows; regex 2026.12 already has Unicode 18.0's new marks, which tokenizers does not join) outside .venv:
    pip install --target /tmp/re17 regex==2025.11.3
    PYTHONPATH=/tmp/re17 .venv/bin/python tests/data/unigram/make_grapheme_tables.py
"""

import regex

PROPERTIES = [("_PREPEND", "GCB=Prepend"), ("_CONTROL", "GCB=Control"), ("_EXTEND", "GCB=Extend"),
              ("_SPACING_MARK", "GCB=SpacingMark"), ("_L", "GCB=L"), ("_V", "GCB=V"), ("_T", "GCB=T"),
              ("_PICTOGRAPHIC", "Extended_Pictographic"), ("_INCB_CONSONANT", "InCB=Consonant"),
              ("_INCB_LINKER", "InCB=Linker"), ("_INCB_EXTEND", "InCB=Extend")]


def ranges(codes):
    out, start, prev = [], None, None
    for c in codes:
        if start is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            out.append((start, prev))
        start = prev = c
    if start is not None:
        out.append((start, prev))
    return [f"{a:04X}" if a == b else f"{a:04X}-{b:04X}" for a, b in out]


def main():
    for name, prop in PROPERTIES:
        pattern = regex.compile(r"\p{%s}" % prop)
        codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and pattern.match(chr(c))]
        items = ranges(codes)
        lines, line = [], "   "
        for item in items:
            if len(line) + len(item) + 1 > 116:
                lines.append(line)
                line = "   "
            line += " " + item
        lines.append(line)
        print(f'{name} = """\n' + "\n".join(lines) + f'\n"""  # {len(codes)} code points\n')


if __name__ == "__main__":
    main()
