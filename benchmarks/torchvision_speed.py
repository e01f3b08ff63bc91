"""CPU training step of cliquegraph's compiled specs against torchvision's own models.

One measurement per fresh process.

Models (--model; --batch overrides the default batch, the input is always 224x224):
    resnet50         specs/resnet.clq (depth=50) vs torchvision.models.resnet50(), batch 16
    mobilenet_v2     specs/mobilenet-v2.clq vs torchvision.models.mobilenet_v2(), batch 32
    efficientnet_b0  specs/efficientnet.clq (variant b0, its default) vs
                     torchvision.models.efficientnet_b0(), batch 32
    densenet121      specs/densenet-121.clq vs torchvision.models.densenet121(), batch 16

Run it with the python of a venv that has torch, torchvision and cliquegraph installed
(`pip install --no-deps -e .` there, plus `pip install lark networkx`); torchvision is never a
dependency of cliquegraph, and no test imports this file:

    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --rounds 5
    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --model mobilenet_v2 --rounds 5
    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --model efficientnet_b0 --rounds 5

or a single measurement, printed as one JSON line:

    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --one cliquegraph
    /work/refvenv2/bin/python benchmarks/torchvision_speed.py --model mobilenet_v2 --one cliquegraph

Variants:
    torchvision        torchvision's model (e.g. torchvision.models.resnet50()), NCHW (its
                       usual form)
    torchvision-nhwc   the same, model and input converted to channels_last
    cliquegraph        cliquegraph.build(<spec>, <params>) (channels_last default)
    cliquegraph-nchw   cliquegraph.build(..., channels_last=False)

Each child process: torch.manual_seed(0), build the model, SGD (lr 0.1, momentum 0.9),
one random batch of `--batch` 3x224x224 float32 images with random labels, cross-entropy; 2
warm-up steps, then the median of 5 timed steps (zero_grad, forward, backward, optimizer step),
and the process's peak RSS (ru_maxrss). With --keep-freed-memory every child (torchvision's
too) first has glibc keep freed memory (cliquegraph.units.keep_freed_memory, as cliquegraph's
runner and bench do); without it glibc's defaults stay. Torch's thread count is left at its default in every
child and reported. The parent runs `--rounds` rounds, each a fresh child per variant (the
order rotated round by round), and prints the median over rounds of each variant's step time
and peak RSS with ratios against torchvision NCHW: speed = torchvision_time / variant_time
(>1: faster than torchvision), memory = variant_rss / torchvision_rss (<1: less memory)."""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("torchvision", "torchvision-nhwc", "cliquegraph", "cliquegraph-nchw")
SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "specs")
# model: (title, spec file, spec params, torchvision.models constructor, default batch)
MODELS = {
    "resnet50": ("ResNet-50", "resnet.clq", {"depth": 50}, "resnet50", 16),
    "mobilenet_v2": ("MobileNet v2", "mobilenet-v2.clq", {}, "mobilenet_v2", 32),
    "efficientnet_b0": ("EfficientNet-B0", "efficientnet.clq", {}, "efficientnet_b0", 32),
    "densenet121": ("DenseNet-121", "densenet-121.clq", {}, "densenet121", 16),
}
SIZE, WARMUP, TIMED = 224, 2, 5


def one(model_name: str, variant: str, batch: int, keep_freed: bool = False) -> dict:
    """Build `variant` of `model_name`, time WARMUP + TIMED training steps on a batch of
    `batch`; return the measurement."""
    import torch
    if keep_freed:
        from cliquegraph.units import keep_freed_memory
        keep_freed_memory()
    _, spec, params, tv_name, _ = MODELS[model_name]
    torch.manual_seed(0)
    nhwc_input = False
    if variant.startswith("torchvision"):
        import torchvision
        model = getattr(torchvision.models, tv_name)()
        if variant == "torchvision-nhwc":
            model = model.to(memory_format=torch.channels_last)
            nhwc_input = True
    elif variant.startswith("cliquegraph"):
        import cliquegraph
        model = cliquegraph.build(os.path.join(SPECS, spec),
                                  channels_last=variant == "cliquegraph", **params)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, SIZE, SIZE)
    y = torch.randint(0, 1000, (batch,))
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
    return {"model": model_name, "variant": variant, "batch": batch,
            "step_s": statistics.median(times), "steps_s": times,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "loss": loss.item(), "keep_freed_memory": keep_freed}


def child(model_name: str, variant: str, batch: int, keep_freed: bool) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--model", model_name,
                          "--batch", str(batch), "--one", variant]
                         + (["--keep-freed-memory"] if keep_freed else []),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="resnet50")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size (default: 16 for resnet50, 32 for the others)")
    ap.add_argument("--one", choices=VARIANTS, help="measure one variant in this process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc keeps freed memory in every child (see above)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="variants to alternate (torchvision is always included)")
    args = ap.parse_args()
    title = MODELS[args.model][0]
    batch = MODELS[args.model][4] if args.batch is None else args.batch
    if batch < 1:
        ap.error(f"--batch must be at least 1, got {batch}")
    if args.one:
        print(json.dumps(one(args.model, args.one, batch, args.keep_freed_memory)), flush=True)
        return
    variants = ["torchvision"] + [v for v in args.variants if v != "torchvision"]
    runs = {v: [] for v in variants}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            res = child(args.model, v, batch, args.keep_freed_memory)
            runs[v].append(res)
            print(f"round {r + 1}/{args.rounds} {v:17} step {res['step_s']:.3f} s  "
                  f"peak {res['peak_rss_mib']:.0f} MiB  threads {res['threads']}  "
                  f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    med = {v: (statistics.median(x["step_s"] for x in rs),
               statistics.median(x["peak_rss_mib"] for x in rs)) for v, rs in runs.items()}
    tv_t, tv_m = med["torchvision"]
    threads = sorted({x["threads"] for rs in runs.values() for x in rs})
    print(f"{title} CPU train step, batch {batch}, {args.rounds} rounds, torch threads "
          f"{threads}, torch {runs['torchvision'][0]['torch']}; median over rounds of each "
          f"process's median of {TIMED} steps"
          + ("; glibc keeps freed memory" if args.keep_freed_memory else ""))
    print(f"{'variant':18} {'step s':>7} {'speed vs tv':>12} {'peak MiB':>9} {'mem vs tv':>10}"
          f"  per-round step s")
    for v, (t, m) in med.items():
        rounds = " ".join(f"{x['step_s']:.2f}" for x in runs[v])
        print(f"{v:18} {t:7.3f} {tv_t / t:11.2f}x {m:9.0f} {m / tv_m:9.2f}x  {rounds}")


if __name__ == "__main__":
    main()
