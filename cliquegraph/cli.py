"""The `cliquegraph` command. Library code raises; this module prints and picks exit codes:
0 ok, 1 a spec, data, checkpoint or run error (SpecError, UserError), 2 a usage error, 130
interrupted. `main` is the one place that maps an error to its message and exit code."""

from __future__ import annotations

import argparse
import os
import sys

from .atomic import write_text_atomic
from .errors import SpecError, UserError, plural


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


def _int_at_least(text, low) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


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


def _add_set(p):
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a param, the value written as in the language "
                        "(repeatable): --set k=64 --set \"widths=[8, 12, 16, 8]\"")


def cmd_check(args) -> int:
    from .elaborate import count_params, elaborate
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


def cmd_fmt(args) -> int:
    from .fmt import fmt
    from .parse import parse_file
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

    from . import ast
    from .elaborate import elaborate
    from .parse import parse_value
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cliquegraph",
        description="Compile clique-connected networks (CliqueNet, DenseNet, ...) from .clq specs.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check", help="check specs: exit 0 valid, 1 spec error, 2 usage error",
                       usage="cliquegraph check FILE [FILE ...] [--set NAME=VALUE]")
    c.add_argument("files", nargs="+", metavar="FILE")
    _add_set(c)
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("fmt", help="print a spec in canonical form (--set bakes in new defaults)",
                       usage="cliquegraph fmt FILE [FILE ...] [--write | --check] "
                             "[--set NAME=VALUE]")
    f.add_argument("files", nargs="+", metavar="FILE")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite the file in place")
    g.add_argument("--check", action="store_true", help="exit 1 if the file is not canonical")
    _add_set(f)
    f.set_defaults(func=cmd_fmt)

    for register in _extra_commands():
        register(sub, _add_set)
    for name, parser in sub.choices.items():
        parser.set_defaults(parser=parser)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cliquegraph")
    except PackageNotFoundError:
        return "(not installed)"


def _extra_commands():
    """Commands that live in their own modules (they import torch only when run)."""
    from . import cli_bench, cli_compile, cli_render, cli_train
    return [cli_compile.register, cli_render.register, cli_train.register, cli_bench.register]


def main(argv=None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as err:
        # the command's own one-line usage, not the top level's
        command = getattr(args, "parser", None) or parser
        command.print_usage(sys.stderr)
        print(f"{command.prog}: error: {err}", file=sys.stderr)
        return 2
    except SpecError as err:
        print(err, file=sys.stderr)
        return 1
    except UserError as err:
        print(f"cliquegraph: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        return 0
    except OSError as err:  # a file we were asked to read or write
        where = f"{err.filename}: " if err.filename else ""
        print(f"cliquegraph: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cliquegraph: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("cliquegraph: out of memory (see README, Troubleshooting)", file=sys.stderr)
        return 1
    except Exception as err:  # a bug of ours: one paragraph, the traceback on request
        if os.environ.get("CLIQUEGRAPH_TRACEBACK"):
            raise
        first = (str(err).splitlines() or [""])[0][:300]
        print(f"cliquegraph: internal error ({type(err).__name__}: {first}). This is a bug in "
              "cliquegraph: please report it with the command; CLIQUEGRAPH_TRACEBACK=1 shows "
              "the traceback.", file=sys.stderr)
        return 1
