"""A sweep over the CliqueNet-X ablation (Stage II runs only its first X updates) and over the
stage count: parameters and FLOPs of each, from one spec and --set-style overrides.

    python examples/sweep.py
"""

import pathlib

import cliquegraph
from cliquegraph.lower import lower
from cliquegraph.summary import count_flops

SPEC = pathlib.Path(__file__).resolve().parent.parent / "specs" / "cliquenet-cifar.clq"

print("CliqueNet-X, k=64, T=15 (5 layers per block)")
for x in range(6):
    net = cliquegraph.elaborate(SPEC, {"k": 64, "T": 15, "steps": x})
    flops = sum(count_flops(lower(net), net.input_shape).values())
    print(f"  X={x}: {cliquegraph.count_params(net):>10,} params  {flops / 1e9:6.2f} GFLOPs")

print("stages, k=36, T=12: more stages reuse every W_ij (only BatchNorms are added)")
for stages in (2, 3, 4):
    net = cliquegraph.elaborate(SPEC, {"stages": stages})
    flops = sum(count_flops(lower(net), net.input_shape).values())
    print(f"  {stages} stages: {cliquegraph.count_params(net):>10,} params  "
          f"{flops / 1e9:6.2f} GFLOPs")
