"""Writing templates as files: JSON or YAML text, written atomically with mode 0644 (they are meant to be read,
committed and handed to `aws cloudformation` / `sam`, unlike the deployment records).

YAML is written here, without a YAML library: block style for mappings and lists, every string as a JSON
(double-quoted) string, which YAML reads as the same string. Intrinsic functions stay in their long form
("Fn::Sub": ...), which CloudFormation, SAM and cfn-lint all read in YAML.

Example:
    >>> print(to_yaml({"Resources": {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Layers": []}}}}))
    Resources:
      Fn:
        Type: "AWS::Lambda::Function"
        Properties:
          Layers: []
    <BLANKLINE>
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

FILE_MODE = 0o644
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # YAML 1.1 reads these as bool/null


def to_yaml(value, indent: int = 0) -> str:
    """`value` (dicts, lists, strings, numbers, booleans, None) as block-style YAML text."""
    return "".join(_lines(value, indent))


def _lines(value, indent: int):
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            plain = _PLAIN_KEY.fullmatch(key) and not key.endswith(":") and key.lower() not in _RESERVED
            name = key if plain else json.dumps(key)
            if isinstance(item, (dict, list)) and item:
                yield f"{pad}{name}:\n"
                yield from _lines(item, indent + 2)
            else:
                yield f"{pad}{name}: {_scalar(item)}\n"
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                text = "".join(_lines(item, indent + 2))
                yield f"{pad}- {text[indent + 2:]}"
            else:
                yield f"{pad}- {_scalar(item)}\n"
    else:
        yield f"{pad}{_scalar(value)}\n"


def _scalar(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(value)  # true/false/null, numbers, and strings double-quoted with JSON's escapes


def write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, make it 0644, rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(content: dict, fmt: str) -> str:
    """The template as `fmt` ("json" or "yaml") text."""
    return to_yaml(content) if fmt == "yaml" else json.dumps(content, indent=2) + "\n"
