"""Build a network from a spec, read its IR, run it: the Python API in one page.

    python examples/api.py
"""

import pathlib

import torch

import cliquegraph
from cliquegraph.schedule import table

SPECS = pathlib.Path(__file__).resolve().parent.parent / "specs"

# the IR: what the spec means, with every shape resolved (no torch needed for this part)
net = cliquegraph.elaborate(SPECS / "cliquenet-cifar.clq", {"k": 12, "T": 15})
block = net.blocks[0]
print(f"{net.name}: {len(net.blocks)} blocks, {cliquegraph.count_params(net):,} parameters")
print(f"block 1: {block.layers} layers, k = {block.width}, "
      f"{block.graph.number_of_edges()} weights W_ij (n^2 = {block.layers ** 2})")
print(table(block))  # the paper's Table 1 for this block

# the compiled module: an ordinary torch.fx.GraphModule
gm = cliquegraph.build(SPECS / "cliquenet-cifar.clq", k=12, T=15).eval()
with torch.no_grad():
    logits = gm(torch.randn(2, 3, 32, 32))
print("logits", tuple(logits.shape))
print("\n".join(line.strip() for line in gm.code.splitlines() if ".g_s2_x3(" in line and "block1" in line))
