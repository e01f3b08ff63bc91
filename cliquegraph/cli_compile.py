"""`cliquegraph compile SPEC [--set ...] [--summary table|json] [--code] [--save FILE]`, and
`compile SPEC --train DATASET ...`, which runs the bundled trainer (cli_train.py). Registered
by cli.py; torch is imported only when the command runs."""

from __future__ import annotations

import json
import sys


def register(sub, add_set):
    p = sub.add_parser("compile", help="compile a spec to a torch.fx GraphModule: summary, "
                       "code, saved weights (and --train DATASET to train it)")
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    p.add_argument("--summary", choices=("table", "json"), default=None,
                   help="per-block layers, k, stages, shapes, params and FLOPs (default: table, "
                        "unless --code or --save is given)")
    p.add_argument("--code", action="store_true", help="print the generated forward (gm.code)")
    p.add_argument("--save", metavar="FILE", help="save state_dict + spec text + params "
                   "(torch.load(FILE, weights_only=True) reads it)")
    from .cli_train import add_train_arguments
    add_train_arguments(p)  # --train DATASET: the bundled runner (cliquegraph train SPEC ...)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .cli import parse_sets
    if args.train or args.resume:
        from .cli_train import run_training
        return run_training(args)
    overrides = parse_sets(args.set)

    from . import checkpoint
    from .elaborate import elaborate
    from .lower import lower
    from .summary import as_json, summarize, table

    net = elaborate(args.spec, overrides)
    gm = lower(net)
    gm.meta["cliquegraph"]["params"] = dict(overrides)
    summary = args.summary or (None if (args.code or args.save) else "table")
    if summary:
        parts = summarize(gm, net)
        if summary == "json":
            print(json.dumps(as_json(parts, net)))
        else:
            print(table(parts, net))
    if args.code:
        print(gm.code.strip("\n"))
    if args.save:
        try:
            checkpoint.save(gm, args.spec, overrides, args.save)
        except OSError as exc:
            print(f"cannot write {args.save}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"saved {args.save}", file=sys.stderr)
    return 0
