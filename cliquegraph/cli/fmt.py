"""`cliquegraph fmt FILE ... [--write | --check] [--set NAME=VALUE]`: a spec in canonical form;
--set bakes new defaults in. Does not import torch."""

from __future__ import annotations

import sys

from ..atomic import write_text_atomic
from ..errors import SpecError
from .args import UsageError, add_set, parse_sets


def register(sub) -> None:
    f = sub.add_parser("fmt", help="print a spec in canonical form (--set bakes in new defaults)",
                       usage="cliquegraph fmt FILE [FILE ...] [--write | --check] "
                             "[--set NAME=VALUE]")
    f.add_argument("files", nargs="+", metavar="FILE")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite the file in place")
    g.add_argument("--check", action="store_true", help="exit 1 if the file is not canonical")
    add_set(f)
    f.set_defaults(func=cmd_fmt)


def cmd_fmt(args) -> int:
    from ..fmt import fmt
    from ..parse import parse_file
    overrides = parse_sets(args.set)
    if len(args.files) > 1 and not (args.write or args.check):
        raise UsageError("several files need --write or --check")
    status = 0
    for path in args.files:
        try:
            spec = parse_file(path)
            if overrides:
                spec = _bake(spec, path, overrides)
        except SpecError as err:
            print(err, file=sys.stderr)
            status = 1
            continue
        text = fmt(spec)
        if args.check:
            if text != spec.text:
                print(f"{path}: not formatted (cliquegraph fmt --write {path})", file=sys.stderr)
                status = 1
        elif args.write:
            if text != spec.text:
                write_text_atomic(path, text)
                print(f"{path}: formatted", file=sys.stderr)
        else:
            sys.stdout.write(text)
    return status


def _bake(spec, path, overrides):
    """fmt --set: the spec with those params' defaults replaced (checked first)."""
    import dataclasses

    from .. import ast
    from ..elaborate import elaborate
    from ..parse import parse_value
    elaborate(path, overrides)  # the overrides must make a valid network
    main = spec.networks[-1]
    body = list(main.body)
    for name, text in overrides.items():
        value = parse_value(text, f"--set {name}")
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Param) and stmt.name == name:
                body[i] = dataclasses.replace(stmt, value=value)
                break
        else:  # declared by a parent network: override it in this one
            last = max((i for i, s in enumerate(body) if isinstance(s, ast.Param)), default=-1)
            body.insert(last + 1, ast.Param(name, value))
    new_main = dataclasses.replace(main, body=tuple(body))
    items = tuple(new_main if item is main else item for item in spec.items)
    return dataclasses.replace(spec, items=items)
