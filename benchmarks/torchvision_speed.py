"""ResNet-50 training step on CPU: cliquegraph's compiled specs/resnet.clq against
torchvision's own resnet50, batch 16 at 224x224, alternating fresh processes.

Run it with the python of a venv that has torchvision and cliquegraph (`pip install
--no-deps -e .` there, plus lark and networkx); torchvision is never a dependency of
cliquegraph, and nothing imports this file:

    /path/to/venv/bin/python benchmarks/torchvision_speed.py --rounds 3

Each child builds one model (seed 0), runs SGD (momentum 0.9) on one random batch: 2 warm-up
steps, then the median of 4 timed steps (forward, backward, optimizer step), and reports its
peak RSS. The parent alternates the variants round by round and prints medians and ratios
against torchvision in NCHW (its usual form) and in channels_last (cliquegraph's default)."""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("torchvision", "torchvision-nhwc", "cliquegraph")
SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "specs", "resnet.clq")


def one(variant: str) -> dict:
    import torch
    torch.manual_seed(0)
    nhwc = variant == "torchvision-nhwc"
    if variant.startswith("torchvision"):
        import torchvision
        model = torchvision.models.resnet50()
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
    else:
        import cliquegraph
        model = cliquegraph.build(SPEC, depth=50)  # channels_last by default
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,))
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    times = []
    for i in range(6):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"variant": variant, "step_s": statistics.median(times),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", choices=VARIANTS, help="measure one variant in this process")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    runs = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--one", v], check=True,
                                 capture_output=True, text=True).stdout
            runs[v].append(json.loads(out.splitlines()[-1]))
    med = {v: (statistics.median(r["step_s"] for r in rs),
               statistics.median(r["peak_rss_mib"] for r in rs)) for v, rs in runs.items()}
    print(f"{'variant':18} {'step s':>7} {'speed vs tv':>12} {'vs tv nhwc':>11} "
          f"{'peak MiB':>9} {'mem vs tv':>10} {'vs tv nhwc':>11}")
    for v, (t, m) in med.items():
        print(f"{v:18} {t:7.2f} {med['torchvision'][0] / t:11.2f}x "
              f"{med['torchvision-nhwc'][0] / t:10.2f}x {m:9.0f} "
              f"{m / med['torchvision'][1]:9.2f}x {m / med['torchvision-nhwc'][1]:10.2f}x")


if __name__ == "__main__":
    main()
