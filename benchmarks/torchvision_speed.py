"""ResNet-50 training step on CPU: cliquegraph's compiled specs/resnet.clq against
torchvision's own resnet50, batch 16 at 224x224, one measurement per fresh process.

Run it with the python of a venv that has torch, torchvision and cliquegraph installed
(`pip install --no-deps -e .` there, plus `pip install lark networkx`); torchvision is never a
dependency of cliquegraph, and no test imports this file:

    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --rounds 5

or a single measurement, printed as one JSON line:

    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --one cliquegraph

Variants:
    torchvision        torchvision.models.resnet50(), NCHW (its usual form)
    torchvision-nhwc   the same, model and input converted to channels_last
    cliquegraph        cliquegraph.build("specs/resnet.clq", depth=50) (channels_last default)
    cliquegraph-nchw   cliquegraph.build(..., channels_last=False)

Each child process: torch.manual_seed(0), build the model, SGD (lr 0.1, momentum 0.9),
one random batch of 16 3x224x224 float32 images with random labels, cross-entropy; 2 warm-up
steps, then the median of 5 timed steps (zero_grad, forward, backward, optimizer step), and the
process's peak RSS (ru_maxrss). Torch's thread count is left at its default in every child
and reported. The parent runs `--rounds` rounds, each a fresh child per variant (the order
rotated round by round), and prints the median over rounds of each variant's step time and
peak RSS with ratios against torchvision NCHW: speed = torchvision_time / variant_time (>1:
faster than torchvision), memory = variant_rss / torchvision_rss (<1: less memory)."""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("torchvision", "torchvision-nhwc", "cliquegraph", "cliquegraph-nchw")
SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "specs", "resnet.clq")
BATCH, WARMUP, TIMED = 16, 2, 5


def one(variant: str) -> dict:
    """Build `variant`, time WARMUP + TIMED training steps; return the measurement."""
    import torch
    torch.manual_seed(0)
    nhwc_input = False
    if variant.startswith("torchvision"):
        import torchvision
        model = torchvision.models.resnet50()
        if variant == "torchvision-nhwc":
            model = model.to(memory_format=torch.channels_last)
            nhwc_input = True
    elif variant.startswith("cliquegraph"):
        import cliquegraph
        model = cliquegraph.build(SPEC, depth=50, channels_last=variant == "cliquegraph")
    else:
        raise ValueError(f"unknown variant {variant!r}")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(BATCH, 3, 224, 224)
    y = torch.randint(0, 1000, (BATCH,))
    if nhwc_input:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    times = []
    for i in range(WARMUP + TIMED):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - start
        if i >= WARMUP:
            times.append(elapsed)
    return {"variant": variant, "step_s": statistics.median(times), "steps_s": times,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "loss": loss.item()}


def child(variant: str) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", variant],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", choices=VARIANTS, help="measure one variant in this process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="variants to alternate (torchvision is always included)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)), flush=True)
        return
    variants = ["torchvision"] + [v for v in args.variants if v != "torchvision"]
    runs = {v: [] for v in variants}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            res = child(v)
            runs[v].append(res)
            print(f"round {r + 1}/{args.rounds} {v:17} step {res['step_s']:.3f} s  "
                  f"peak {res['peak_rss_mib']:.0f} MiB  threads {res['threads']}  "
                  f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    med = {v: (statistics.median(x["step_s"] for x in rs),
               statistics.median(x["peak_rss_mib"] for x in rs)) for v, rs in runs.items()}
    tv_t, tv_m = med["torchvision"]
    threads = sorted({x["threads"] for rs in runs.values() for x in rs})
    print(f"ResNet-50 CPU train step, batch {BATCH}, {args.rounds} rounds, torch threads "
          f"{threads}, torch {runs['torchvision'][0]['torch']}; median over rounds of each "
          f"process's median of {TIMED} steps")
    print(f"{'variant':18} {'step s':>7} {'speed vs tv':>12} {'peak MiB':>9} {'mem vs tv':>10}"
          f"  per-round step s")
    for v, (t, m) in med.items():
        rounds = " ".join(f"{x['step_s']:.2f}" for x in runs[v])
        print(f"{v:18} {t:7.3f} {tv_t / t:11.2f}x {m:9.0f} {m / tv_m:9.2f}x  {rounds}")


if __name__ == "__main__":
    main()
