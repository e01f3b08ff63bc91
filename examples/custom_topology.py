"""A topology the paper could not write: blocks wired as a small world, next to the full
clique and DenseNet's dense wiring, at the same k and depth.

    python examples/custom_topology.py
"""

import pathlib
import tempfile

import cliquegraph

SPEC = """
include "{specs}/cliquenet-cifar.clq"

network wired extends cliquenet_cifar {{
  param T = 24
  param wiring = clique
  blocks {{
    topology wiring
  }}
}}
"""

specs = pathlib.Path(__file__).resolve().parent.parent / "specs"
with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "wired.clq"
    path.write_text(SPEC.format(specs=specs.as_posix()))
    for wiring in ["clique", "dense", "chain", "watts_strogatz(k = 2, p = 0.3, seed = 1)",
                   "erdos_renyi(p = 0.4, seed = 1)"]:
        net = cliquegraph.elaborate(path, {"wiring": wiring})
        edges = net.blocks[0].graph.number_of_edges()
        print(f"{wiring:45s} {edges:3d} W_ij per block  {cliquegraph.count_params(net):>10,} params")
