"""Peak memory of a training step against batch size, and the largest batch that fits a budget.

    python benchmarks/bench_memory_scaling.py                       # S3 at 224, batches 1..16
    python benchmarks/bench_memory_scaling.py --batches 1,2,4 --steps 1 --warmup 1
    python benchmarks/bench_memory_scaling.py --no-memory-efficient # keep the concatenations

Every (variant, batch) is one fresh process (cliquegraph.bench.run_isolated), so its ru_maxrss
is that step's peak on CPU. A line peak = a + b * batch is fitted by least squares over the
batches; the largest batch in the budget (default 24 GiB) is floor((budget - a) / b). Prints a
markdown table, ready for the README.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cliquegraph import SpecError, bench, elaborate  # noqa: E402
from cliquegraph.cli.args import parse_sets  # noqa: E402


def fit(batches, peaks):
    """(a, b) of peak = a + b * batch, least squares."""
    b, a = np.polyfit(np.asarray(batches, float), np.asarray(peaks, float), 1)
    return float(a), float(b)


def largest_batch(a, b, budget_mb):
    return math.floor((budget_mb - a) / b) if b > 0 else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "s3.clq"))
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--batches", default="1,2,4,8,16", help="comma-separated (default 1,2,4,8,16)")
    p.add_argument("--variants", default="default,original_style")
    p.add_argument("--steps", type=int, default=1, help="timed steps per point (default 1)")
    p.add_argument("--warmup", type=int, default=1,
                   help="steps before (default 1: the optimizer's momentum exists by then)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget-gib", type=float, default=24.0)
    p.add_argument("--memory-efficient", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--timeout", type=float, default=None, help="per point, seconds")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args(argv)

    overrides = parse_sets(args.set)
    try:
        net = elaborate(args.spec, overrides)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 1
    batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    threads = args.threads or bench.default_threads()
    budget_mb = args.budget_gib * 1024
    host = bench.machine("cpu", threads)
    peaks = {v: {} for v in variants}
    started = time.time()
    for v in variants:
        for batch in batches:
            job = {"spec": str(Path(args.spec).resolve()), "overrides": overrides,
                   "variant": v, "batch": batch, "steps": args.steps, "warmup": args.warmup,
                   "device": "cpu", "threads": threads,
                   "memory_efficient": args.memory_efficient}
            r = bench.run_isolated(job, args.timeout)
            peaks[v][batch] = r
            shown = f"{r['peak_mb']:.0f} MB, {r['step_ms']:.0f} ms/step" if "error" not in r \
                else f"failed: {r['error']}"
            print(f"{v} batch {batch}: {shown}", file=sys.stderr)

    fits = {}
    for v in variants:
        ok = [(b, r["peak_mb"]) for b, r in peaks[v].items() if "error" not in r]
        if len(ok) >= 2:
            a, b = fit(*zip(*ok))
            fits[v] = {"a_mb": a, "b_mb_per_image": b,
                       "largest_batch": largest_batch(a, b, budget_mb)}

    sets = " ".join(f"--set {k}={val}" for k, val in overrides.items())
    shape = "x".join(map(str, net.input_shape))
    print(f"Peak memory (ru_maxrss, MiB) of one training step (SGD, momentum) of {net.name} at "
          f"{shape}{' ' + sets if sets else ''}; CPU {host['cpu']}, {threads} threads, torch "
          f"{host['torch']}; {args.warmup} + {args.steps} steps per point, each point a fresh "
          f"process ({time.time() - started:.0f} s in all).\n")
    print("| batch | " + " | ".join(variants) + " |")
    print("|---:|" + "---:|" * len(variants))
    for batch in batches:
        cells = [f"{peaks[v][batch]['peak_mb']:.0f}" if "error" not in peaks[v][batch]
                 else "failed" for v in variants]
        print(f"| {batch} | " + " | ".join(cells) + " |")
    line = [f"{fits[v]['a_mb']:.0f} + {fits[v]['b_mb_per_image']:.1f} x batch" if v in fits
            else "-" for v in variants]
    print("| fit (MiB) | " + " | ".join(line) + " |")
    most = [str(fits[v]["largest_batch"]) if v in fits else "-" for v in variants]
    print(f"| largest batch in {args.budget_gib:g} GiB | " + " | ".join(most) + " |")
    if "default" in fits and "original_style" in fits:
        ratio = fits["default"]["b_mb_per_image"] / fits["original_style"]["b_mb_per_image"]
        print(f"\nper-image memory, default / original_style: {ratio:.2f}x")
    if args.json:
        print(json.dumps({"spec": args.spec, "overrides": overrides, "machine": host,
                          "points": {v: {str(b): r for b, r in peaks[v].items()}
                                     for v in variants}, "fits": fits}, indent=2))
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
