"""What the runner costs on CPU, and what the README's first command delivers.

    python benchmarks/train_overhead.py                  # both parts, the main job's module
    python benchmarks/train_overhead.py --part overhead --set k=4 --set T=3
    python benchmarks/train_overhead.py --part digits --set k=12 --set T=6 --set dropout=0

overhead: img/s of the runner's training phase (cliquegraph.train.loop.train on digits) against a
    bare `loss = F.cross_entropy(model(x), y); zero_grad; backward; step` loop over the very same
    module, initial weights and batches (the same epoch orders, normalised the same way). Both
    sides run the same number of epochs, twice, alternating, and the medians of per-epoch img/s
    are compared (the first epoch of each side is warm-up). Target: the loop's overhead <= 10%.
digits: `cliquegraph train specs/cliquenet-cifar.clq --set k=12 --set T=6 --train digits` as a
    fresh process: wall time (imports included), final and best test accuracy, and when 97% was
    first reached. Target: >= 97% in under 2 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cliquegraph.cli.args import parse_sets  # noqa: E402
from cliquegraph.elaborate import elaborate  # noqa: E402
from cliquegraph.lower import lower  # noqa: E402
from cliquegraph.train import loop  # noqa: E402
from cliquegraph.train.data import load  # noqa: E402
from cliquegraph.train.recipes import recipe_for  # noqa: E402

SPEC = str(ROOT / "specs" / "cliquenet-cifar.clq")
MAIN_JOB = ["--set", "k=12", "--set", "T=6"]


def bare(spec, params, epochs, seed=0) -> list[float]:
    """Per-epoch img/s of the bare loop on the runner's batches."""
    from torch.utils.data import DistributedSampler
    net = elaborate(spec, params)
    ds = load("digits", None, input_shape=net.input_shape, train=True)
    recipe = recipe_for("digits", epochs=epochs)
    torch.manual_seed(seed)
    model = lower(net)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=seed)
    rates = []
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        batches = [ds[order[i:i + recipe.batch_size]]
                   for i in range(0, len(order), recipe.batch_size)]
        model.train()
        t0 = time.perf_counter()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(order) / (time.perf_counter() - t0))
    return rates


def runner(spec, params, epochs, seed=0) -> list[float]:
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        cfg = loop.TrainConfig(spec=spec, dataset="digits", params=params, out=out,
                               recipe={"epochs": epochs}, seed=seed, progress=False)
        run = loop.train(cfg)
    return [m["images_per_second"] for m in run.metrics]


def overhead(spec, params, epochs):
    sides = {"bare": [], "runner": []}
    for _ in range(2):  # alternate, so a load change on the machine hits both sides
        for name, fn in (("bare", bare), ("runner", runner)):
            sides[name] += fn(spec, params, epochs)[1:]  # the first epoch warms up
    b, r = statistics.median(sides["bare"]), statistics.median(sides["runner"])
    return b, r


def digits(sets):
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "cliquegraph", "train", SPEC, *sets, "--train", "digits",
               "--device", "cpu", "--out", out]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stdout + proc.stderr)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    reached = next((r for r in rows if r["test_acc"] >= 0.97), None)
    return wall, rows, reached


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("overhead", "digits", "both"), default="both")
    p.add_argument("--spec", default=SPEC, help="the overhead part's spec")
    p.add_argument("--set", action="append", default=None, metavar="NAME=VALUE",
                   help="for both parts; default: the main job's k=12, T=6")
    p.add_argument("--epochs", type=int, default=3,
                   help="per side and round (overhead; at least 2: the first warms up)")
    args = p.parse_args()
    if args.epochs < 2 and args.part != "digits":
        p.error("--epochs must be at least 2: the first epoch of each side is a warm-up")
    sets = args.set if args.set is not None else MAIN_JOB[1::2]
    params = parse_sets(sets)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    if args.part in ("overhead", "both"):
        b, r = overhead(args.spec, params, args.epochs)
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        batch = recipe_for("digits").batch_size
        print(f"\nloop overhead: {Path(args.spec).name} {shown}, digits, batch {batch}, CPU")
        print(f"  {'bare fwd+bwd+step':<22} {b:8.0f} img/s   1.00")
        print(f"  {'cliquegraph runner':<22} {r:8.0f} img/s   {r / b:.2f}")
        print(f"  overhead {100 * (1 - r / b):+.1f}%  (target <= 10%)")
    if args.part in ("digits", "both"):
        wall, rows, reached = digits([a for s in sets for a in ("--set", s)])
        last, best = rows[-1], max(r["test_acc"] for r in rows)
        shown = " ".join(f"--set {s}" for s in sets)
        print(f"\ndigits: cliquegraph train specs/cliquenet-cifar.clq {shown} --train digits")
        print(f"  {len(rows)} epochs in {wall:.0f}s wall (imports included); final test acc "
              f"{100 * last['test_acc']:.2f}%, best {100 * best:.2f}%")
        if reached:
            at = sum(r["seconds"] for r in rows if r["epoch"] <= reached["epoch"])
            print(f"  97% first at epoch {reached['epoch']} ({at:.0f}s of training)")
        else:
            print("  97% not reached")
        print(f"  target: >= 97% in < 120s: {'met' if reached and wall < 120 else 'NOT met'}")


if __name__ == "__main__":
    main()
