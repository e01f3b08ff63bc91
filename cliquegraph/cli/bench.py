"""`cliquegraph bench SPEC [--set ...] [--batch B] [--steps N] [--warmup W] [--device cpu|cuda]
[--variants default,compiled,original_style,naive,conv_floor] [--[no-]memory-efficient]
[--threads N] [--rounds R] [--amp bf16|fp16|off] [--[no-]keep-freed-memory] [--timeout S]
[--json]`
(registered by cli/__init__.py; torch is imported only when the command runs).

    cliquegraph bench specs/cliquenet-cifar.clq --batch 64 --rounds 3
    cliquegraph bench specs/s3.clq --batch 16 --steps 2 --warmup 1 --json

Exit codes: 0 measured, 1 a spec error or every variant failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from .args import UsageError, add_set, count, parse_sets, positive_int

# bench.VARIANTS, torch-free
VARIANTS = ("default", "compiled", "original_style", "naive", "conv_floor")


def register(sub):
    p = sub.add_parser(
        "bench", usage="cliquegraph bench SPEC [--set NAME=VALUE] [--batch B] [--rounds R] "
                       "[options]",
        help="time the training step and measure peak memory of the compiled network "
                      "against the original form, the naive interpreter and the conv floor",
        description="Train-step time (forward + backward + SGD, median after warm-up) and peak "
                    "memory of each variant, each in its own process: default (our lowering), "
                    "compiled (the same under torch.compile; its compile time is reported "
                    "apart), original_style (the original implementation's form), naive (one "
                    "conv per edge) and conv_floor (only the convolutions, on preallocated "
                    "inputs).")
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    p.add_argument("--batch", type=positive_int, default=16, metavar="B", help="default 16")
    p.add_argument("--steps", type=positive_int, default=5, metavar="N",
                   help="timed steps; the median is reported (default 5)")
    p.add_argument("--warmup", type=count, default=2, metavar="W",
                   help="untimed steps first (default 2)")
    p.add_argument("--rounds", type=positive_int, default=1, metavar="R",
                   help="run every variant R times, alternating, each in a fresh process: "
                        "median of medians (default 1; use 3 or more on a shared machine)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch threads (default: the cores this process may use)")
    p.add_argument("--variants", default=",".join(VARIANTS), metavar="LIST",
                   help=f"comma-separated, from {','.join(VARIANTS)} (default: all)")
    p.add_argument("--memory-efficient", action=argparse.BooleanOptionalAction, default=True,
                   help="default variant: recompute each update's concatenation and BN-ReLU in "
                        "backward (the compiler's default); --no-memory-efficient keeps them")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off",
                   help="run every variant's forward under autocast in this dtype (default "
                        "off; no grad scaler: the figures are timings)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="on CPU, have glibc keep freed memory for the next step in every "
                        "variant, as the runner does (--no-keep-freed-memory: glibc's defaults)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up on a variant after S s")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    overrides = parse_sets(args.set)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UsageError(f"--variants: unknown {', '.join(unknown) or '(empty)'}; "
                         f"choose from {','.join(VARIANTS)}")
    import torch

    from .. import bench
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")

    def progress(name, record, round_):
        where = f" (round {round_ + 1}/{args.rounds})" if args.rounds > 1 else ""
        if record.get("failed"):
            print(f"bench: {name}{where}: failed: {record['error']}", file=sys.stderr)
        else:
            print(f"bench: {name}{where}: {record['step_ms']:.1f} ms/step, peak "
                  f"{record['peak_mb']:.0f} MB", file=sys.stderr)

    result = bench.measure(args.spec, overrides, variants=list(dict.fromkeys(variants)),
                           batch=args.batch, steps=args.steps, warmup=args.warmup,
                           device=args.device, threads=args.threads,
                           memory_efficient=args.memory_efficient, timeout=args.timeout,
                           rounds=args.rounds, on_result=progress,
                           keep_freed_memory=args.keep_freed_memory, amp=args.amp)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(bench.table(result))
    ok = any(not r.get("failed") for r in result["variants"].values())
    return 0 if ok else 1
