"""What every command shares: the usage error, argparse types and --set parsing. Nothing here
imports torch."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    pass


def parse_sets(items) -> dict:
    """--set NAME=VALUE (repeatable) -> {NAME: VALUE text}; the text is parsed as .clq."""
    out = {}
    for item in items or ():
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier() or not value.strip():
            raise UsageError(f"--set wants NAME=VALUE, got {item!r} (e.g. --set k=64, "
                             f"--set \"widths=[8, 12, 16, 8]\", --set attention=false)")
        out[name] = value.strip()
    return out


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def count(text) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, low, high=None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text}")
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def seed(text) -> int:
    """argparse type: a seed torch takes (0..2**63-1)."""
    return _int_at_least(text, 0, 2 ** 63 - 1)


def finite_float(text) -> float:
    """argparse type: a number (not inf or nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_set(p):
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a param, the value written as in the language "
                        "(repeatable): --set k=64 --set \"widths=[8, 12, 16, 8]\"")
