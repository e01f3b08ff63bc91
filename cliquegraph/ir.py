"""The IR: what a spec means, with every shape resolved. The single source of truth for the
lowering, the diagrams, the summaries and the tests.

A network is a chain stem -> block 1 -> transition 1 -> ... -> block B -> head, kept as a
networkx DAG (`Network.graph`); each block is a `networkx.DiGraph` over X_0..X_n whose edges are
the weights W_ij (attributes: kernel, in_channels, out_channels). `parts(net)` walks that chain
in execution order; everything that goes through a whole network (the lowering, the reference,
the summaries, the diagrams, the benchmark) walks it with that one function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import networkx as nx

from . import names
from .ops import Op  # the IR of an op: one small dataclass per family, defined by the op table

__all__ = ["Op", "Unit", "Block", "Network", "Part", "parts"]


@dataclass(frozen=True)
class Unit:
    """The ops an update runs: the paper's g, as a block's `unit { ... }` writes it (by default
    BN-ReLU-conv, with the bottleneck's 1x1 first). `first` is the unit's first conv: its
    weight is the W_ij of the update's edges concatenated along their input channels, so
    the ops before it (`pre`) must act per channel (BN, activations, dropout) and see the
    update's inputs concatenated; their shapes here are those of one nominal input. `body`,
    the ops after it, belongs to the layer: each weight once per layer, reused in every
    stage; a BN in it is per stage as the pre BN is (or shared by the loop stages)."""
    pre: tuple
    first: Optional[Op]        # None: the unit starts with branches and has no W_ij
    body: tuple

    @property
    def ops(self) -> tuple:
        return self.pre + ((self.first,) if self.first is not None else ()) + self.body

    @property
    def out_shape(self) -> tuple:
        return self.ops[-1].out_shape


@dataclass(frozen=True)
class Block:
    index: int                 # 1-based, as in the paper
    graph: nx.DiGraph = field(compare=False)  # X_0..X_n, edges W_ij
    layers: int                # n
    width: int                 # k
    in_shape: tuple            # (C_0, H, W)
    topology: str              # as written: clique, dense, chain, edges, watts_strogatz(...)
    stages: int
    steps: Optional[int]       # updates of the last stage; None = all
    feature: tuple             # sources to the loss, in channel order: 'x0', 'stage1', ...
    transit: tuple             # sources to the next block
    bottleneck: Optional[int]  # mid width of the 1x1 W_ij; None = W_ij are `kernel` convs
    kernel: tuple
    bn: str                    # per_stage | shared
    dropout: float
    merge: str                 # cat: X_i = g(inputs); add: X_i = post(g(inputs) + shortcuts)
    stride: int                # of the updates that read X_0 (those read only X_0 if > 1)
    unit: Unit                 # what an update that does not read X_0 runs
    unit0: Unit                # what an update that reads X_0 runs (unit itself if stride 1)
    shortcut: tuple            # merge add: the ops on an X_0 edge whose shape differs
                               # from the layers' (none: the edge adds X_0 itself)
    shortcut_from: str         # input | pre: what the shortcut ops read (pre: X_0 after the
                               # unit's pre ops, as pre-activation ResNets project)
    post: tuple                # merge add: the ops after the addition (post-activation relu)
    add_x0: bool = True        # merge add: whether an update reading X_0 adds it (False:
                               # `shortcut none` where X_0's shape differs, as MobileNet)

    def added(self, layer: int) -> bool:
        """merge add: whether an update adds its input X_layer to its unit's output."""
        return layer != 0 or self.add_x0

    def adds(self, inputs) -> bool:
        """Whether an update reading `inputs` adds any of them to its unit's output."""
        return self.merge == "add" and any(self.added(l) for l in inputs)

    def runs(self, op, inputs) -> bool:
        """Whether an update reading `inputs` runs `op` of its unit: all but a droppath where
        the update adds nothing to the unit's output (stochastic depth drops a residual
        branch; with no residual it would drop the layer itself)."""
        return op.kind != "droppath" or self.adds(inputs)

    @property
    def c0(self) -> int:
        return self.in_shape[0]

    @property
    def hw(self) -> tuple:
        """The layers' height and width (the input's, divided by the stride)."""
        return self.unit0.out_shape[1:]

    def channels_of(self, sources) -> int:
        return sum(self.c0 if s == "x0" else self.width if s == "xn" else
                   self.layers * self.width for s in sources)

    def unit_of(self, inputs) -> Unit:
        """The unit of an update reading `inputs` (layer numbers)."""
        return self.unit0 if 0 in inputs else self.unit

    @property
    def feature_channels(self) -> int:
        return self.channels_of(self.feature)

    @property
    def transit_channels(self) -> int:
        return self.channels_of(self.transit)

    def updates(self, stage: int) -> int:
        """How many layers stage `stage` updates (all, unless `steps` cuts the last stage)."""
        if stage == self.stages and self.steps is not None and stage > 1:
            return self.steps
        return self.layers


@dataclass(frozen=True)
class Network:
    name: str
    path: str
    text: str = field(repr=False)  # the spec text it was built from, includes inlined
    params: tuple              # resolved (name, value) in declaration order
    input_shape: tuple         # (C, H, W)
    stem: tuple                # Ops
    blocks: tuple              # Blocks
    transitions: tuple         # one tuple of Ops between each pair of blocks
    scales: tuple              # 1-based indices of the blocks whose features reach the head
    head_scale: tuple          # per scale: Ops up to and including `pool global`
    head: tuple                # Ops on the concatenated vector
    graph: nx.DiGraph = field(compare=False, repr=False)  # stem -> blocks -> ... -> head
    overrides: tuple = ()      # the (name, .clq text) it was built with, as --set gives them

    @property
    def outputs(self) -> int:
        return (self.head[-1].out_shape if self.head else
                (sum(ops[-1].out_shape[0] for ops in self.head_scale),))[0]

    def param(self, name):
        return dict(self.params)[name]


@dataclass(frozen=True)
class Part:
    """One step of the network's path from input to output (see `parts`).

    `block` is the Block itself for a block, the block whose transit a transition reads, and
    the block whose feature a scale reads; None for the stem and the classifier."""
    kind: str                 # stem | block | transition | scale | classifier
    index: int                # block, scale: the block's number; transition: the block before it
    name: str                 # its module: stem, block1, transition1, head1, classifier
    group: str                # the summary's part it counts to: stem, block1, transition1, head
    in_shape: tuple
    out_shape: tuple
    ops: tuple = ()           # stem, transition, scale, classifier
    block: Optional[Block] = None


def parts(net: Network):
    """The parts of `net` in execution order: stem, block 1, transition 1, ..., block B, one
    scale per block feature the head reads (its ops up to `pool global`), classifier."""
    yield Part("stem", 0, names.STEM, names.STEM, net.input_shape,
               _out_shape(net.stem, net.input_shape), net.stem)
    for b in net.blocks:
        hw = b.hw
        out = (b.transit_channels if b.transit else b.feature_channels,) + hw
        yield Part("block", b.index, names.block(b.index), names.block(b.index), b.in_shape,
                   out, block=b)
        if b.index <= len(net.transitions):
            ops, shape = net.transitions[b.index - 1], (b.transit_channels,) + hw
            yield Part("transition", b.index, names.transition(b.index),
                       names.transition(b.index), shape, _out_shape(ops, shape), ops, b)
    width = 0
    for s, ops in zip(net.scales, net.head_scale):
        b = net.blocks[s - 1]
        shape = (b.feature_channels,) + b.hw
        out = _out_shape(ops, shape)
        width += out[0]
        yield Part("scale", s, names.head(s), names.HEAD, shape, out, ops, b)
    yield Part("classifier", 0, names.CLASSIFIER, names.HEAD, (width,), (net.outputs,),
               net.head)


def _out_shape(ops, in_shape) -> tuple:
    return ops[-1].out_shape if ops else in_shape
