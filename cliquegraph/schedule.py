"""Schedule: a block graph and its stage count -> the ordered list of updates.

Stage I updates X_1..X_n in order, each from its in-edges l -> i with l < i (X_0 included).
A stage s >= 2 updates each layer from every in-edge from a layer, each source at its newest
value (this stage's for sources already updated, the previous stage's for the rest), in Table
1's circular order i+1..n, 1..i-1. `steps X` stops the last stage after its first X updates.
For a 5-layer clique and 2 stages this list is Table 1 of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ir, topology


@dataclass(frozen=True)
class Update:
    layer: int
    stage: int
    inputs: tuple  # ((source layer, stage of its value), ...) in concatenation order; X_0 = (0, 1)

    @property
    def weights(self) -> tuple:
        """The W_ij this update reads, matching `inputs`: ((src, dst), ...)."""
        return tuple((src, self.layer) for src, _ in self.inputs)

    def __str__(self):
        ins = ", ".join("X_0" if l == 0 else f"X_{l}^({s})" for l, s in self.inputs)
        return f"X_{self.layer}^({self.stage}) <- {{{ins}}}"


@dataclass(frozen=True)
class BlockSchedule:
    updates: tuple       # Update, in execution order
    after_stage: tuple   # after_stage[s-1][l-1]: the stage of X_l's value when stage s ends

    def sources(self, policy) -> tuple:
        """The values a feature/transit policy concatenates: ((layer, stage), ...)."""
        out = []
        for part in policy:
            if part == "x0":
                out.append((0, 1))
            elif part == "xn":  # the last layer at its newest value: a chain's output
                out.append((len(self.after_stage[-1]), self.after_stage[-1][-1]))
            else:
                s = int(part[len("stage"):])
                out.extend((l, st) for l, st in enumerate(self.after_stage[s - 1], 1))
        return tuple(out)


def schedule(block: ir.Block) -> BlockSchedule:
    g, n = block.graph, block.layers
    latest = {}  # layer -> stage of its newest value
    updates, after = [], []
    for i in range(1, n + 1):
        ins = tuple((l, 1) for l in topology.stage1_inputs(g, i))
        updates.append(Update(i, 1, ins))
        latest[i] = 1
    after.append(tuple(latest[l] for l in range(1, n + 1)))
    for s in range(2, block.stages + 1):
        for i in range(1, block.updates(s) + 1):
            sources = topology.loop_inputs(g, i, n)
            if not sources:
                continue  # nothing to read: the layer keeps its value
            updates.append(Update(i, s, tuple((l, latest[l]) for l in sources)))
            latest[i] = s
        after.append(tuple(latest[l] for l in range(1, n + 1)))
    return BlockSchedule(tuple(updates), tuple(after))


def table(block: ir.Block) -> str:
    """The schedule in the layout of the paper's Table 1, one update per line."""
    return "\n".join(str(u) for u in schedule(block).updates)
