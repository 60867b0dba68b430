"""argparse types the subcommands share: each converts the text, then checks the value, naming the rule."""

from __future__ import annotations

import argparse


def checked(convert, what: str, accept, rule: str):
    """An argparse type: convert the text, then check the value against `rule`."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{rule}, found {text}")
        return value

    return parse


positive_int = checked(int, "a whole number", lambda v: v >= 1, "must be at least 1")
non_negative_int = checked(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
seconds = checked(float, "a number of seconds", lambda v: 0 < v <= 86400, "must be more than 0 and at most 86400")
port = checked(int, "a port number", lambda v: 0 <= v <= 65535, "must be from 0 to 65535")


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


MODAL_GPU_DEFAULT = "T4"  # `build modal` and `deploy modal` share it: the same app either way


def modal_gpu(text: str) -> str | None:
    """--gpu for Modal: a GPU type (any case), or none/cpu for CPU containers."""
    from votive.builders.modal_build import MODAL_GPUS

    if text.lower() in ("none", "cpu"):
        return None
    if text.upper() not in MODAL_GPUS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(MODAL_GPUS)} or none, found {text!r}")
    return text.upper()


def add_modal_gpu(parser: argparse.ArgumentParser) -> None:
    """The --gpu option of `votive build modal` and `votive deploy modal`, one default for both."""
    parser.add_argument("--gpu", default=MODAL_GPU_DEFAULT, type=modal_gpu, metavar="GPU",
                        help=f"GPU type: T4, L4, A10G, A100, H100, or none for CPU containers "
                             f"(default {MODAL_GPU_DEFAULT})")
