"""`cliquegraph check FILE ... [--set NAME=VALUE]`: exit 0 when every spec is valid, 1 when one
is not (each error printed), 2 usage. Does not import torch."""

from __future__ import annotations

import sys

from ..errors import SpecError, plural
from .args import add_set, parse_sets


def register(sub) -> None:
    c = sub.add_parser("check", help="check specs: exit 0 valid, 1 spec error, 2 usage error",
                       usage="cliquegraph check FILE [FILE ...] [--set NAME=VALUE]")
    c.add_argument("files", nargs="+", metavar="FILE")
    add_set(c)
    c.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    from ..elaborate import count_params, elaborate
    overrides = parse_sets(args.set)
    bad = 0
    for path in args.files:
        try:
            net = elaborate(path, overrides)
        except SpecError as err:
            print(err, file=sys.stderr)
            bad += 1
            continue
        shape = "x".join(map(str, net.input_shape))
        print(f"{path}: ok  network {net.name}, input {shape}, "
              f"{plural(len(net.blocks), 'block')}, {count_params(net):,} params, "
              f"{plural(net.outputs, 'output')}")
    return 1 if bad else 0
