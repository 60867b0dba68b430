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
