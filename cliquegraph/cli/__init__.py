"""The `cliquegraph` command. Library code raises; this module prints and picks exit codes:
0 ok, 1 a spec, data, checkpoint or run error (SpecError, UserError), 2 a usage error, 130
interrupted. `main` is the one place that maps an error to its message and exit code.

One module per command (check, fmt, compile, render, train + eval, bench), each with a
`register(sub)` that adds its parser without importing torch; args.py holds what they share."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SpecError, UserError
from . import bench, check, compile, fmt, render, train
from .args import UsageError

COMMANDS = (check, fmt, compile, render, train, bench)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cliquegraph",
        description="Compile clique-connected networks (CliqueNet, DenseNet, ...) from .clq specs.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    for name, parser in sub.choices.items():
        parser.set_defaults(parser=parser)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cliquegraph")
    except PackageNotFoundError:
        return "(not installed)"


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
