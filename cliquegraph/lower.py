"""Lower: IR -> torch.fx.GraphModule, built node by node from the schedule (nothing is traced).

Each W_ij is one nn.Parameter (`block1.w_4_3`), fetched once into the graph and read by every
stage that uses it. Each update is the paper's unit g: BN over the update's concatenated inputs
(module `block1.g_s2_x3`, one per (stage, update), or per layer for all loop stages with `bn
shared`), ReLU, and one conv with the matching W_ij concatenated along their input channels
(one conv per update, not per edge), then the block's dropout. Every op is lowered as itself;
fuse.py then turns each BN-ReLU-conv(-dropout) chain into one lean unit (units.py). Nodes carry
the paper's names, so `print(gm.code)` reads like Table 1:
`b1_x3_s2 = self.block1.g_s2_x3(b1_w_x3_s2, b1_x4_s1, b1_x5_s1, b1_x1_s2, ...)`.
"""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch._functorch.config as aot_config
import torch.fx as fx
from torch import nn

from . import ir, names, ops
from .elaborate import elaborate
from .fuse import fuse
from .schedule import schedule
from .values import as_text


def op_module(op: ir.Op) -> nn.Module:
    """The nn.Module for a stem/transition/head op."""
    return ops.KINDS[op.kind].module(op)


class _Lowering:
    def __init__(self, net: ir.Network, channels_last: bool):
        self.net, self.channels_last = net, channels_last
        self.root = nn.Module()
        self.graph = fx.Graph()

    def node(self, part, *args, op=None, **kwargs):
        n = self.graph.create_node(*args, **kwargs)
        n.meta["part"] = part
        if op is not None:  # what fuse.py matches chains by
            n.meta["op"] = op
        return n

    def cat(self, part, name, tensors):
        if len(tensors) == 1:
            return tensors[0]
        n = self.node(part, "call_function", torch.cat, (list(tensors), 1), name=name)
        n.meta["cat"] = True  # a unit may read its inputs instead (fuse.py)
        return n

    def section(self, container: str, ops, x, part, cat_as=None):
        """A stem/transition/head: one module per op, named kind+index (`transition1.conv2`).
        `x` may be a list of tensors, concatenated first as `cat_as` = (part, node name)."""
        holder = nn.Module()
        setattr(self.root, container, holder)
        if isinstance(x, list):
            x = self.cat(*cat_as, x)
        for j, op in enumerate(ops):
            name = names.op(op.kind, j)
            holder.add_module(name, op_module(op))
            if op.kind == "branches":
                x = self.branches(part, names.key(container, name), op, x,
                                  names.node(container, name))
                continue
            x = self.node(part, "call_module", names.key(container, name), (x,),
                          name=names.node(container, name), op=op)
            x.meta["weight_node"] = names.section_weight_node(container, j)
        return x

    def branches(self, part, target, op, x, node_name):
        """A branches op inline, so that gm.code shows its paths: each path's ops as nodes
        calling the modules under `target` (units.Branches made them), then the
        concatenation, which is the node `node_name`."""
        outs = []
        for k, path in enumerate(op.paths):
            y = x
            if op.split:
                width = op.in_shape[0] // len(op.paths)
                y = self.node(part, "call_method", "narrow", (x, 1, k * width, width),
                              name=f"{node_name}_p{k}")
            for j, o in enumerate(path):
                child = names.branch_op(k, o.kind, j)
                if o.kind == "branches":
                    y = self.branches(part, names.key(target, child), o, y,
                                      f"{node_name}_{child}")
                    continue
                y = self.node(part, "call_module", names.key(target, child), (y,), op=o,
                              name=f"{node_name}_{child}")
                y.meta["weight_node"] = f"{node_name}_{child}_weight"
            outs.append(y)
        return self.node(part, "call_function", torch.cat, (outs, 1), name=node_name)

    def block(self, b: ir.Block, x):
        part, tag = names.block(b.index), names.block_tag(b.index)
        mod = nn.Module()
        setattr(self.root, part, mod)
        g = b.graph
        for i, j, d in g.edges(data=True):
            if d["kernel"] is None:  # a unit without a first conv: the edge has no W_ij
                continue
            kh, kw = d["kernel"]
            mod.register_parameter(names.weight(i, j), nn.Parameter(
                torch.empty(d["out_channels"], d["in_channels"], kh, kw)))
        weights = {}

        def w(name):  # one get_attr per shared weight, read by every stage
            if name not in weights:
                weights[name] = self.node(part, "get_attr", names.key(part, name), (),
                                          name=names.node(tag, name))
            return weights[name]

        def owned(name, shape, make=None):  # a layer's weight or module, made at first use
            if not hasattr(mod, name):
                if make is None:
                    mod.register_parameter(name, nn.Parameter(torch.empty(*shape)))
                else:
                    mod.add_module(name, make())
            return name

        sched = schedule(b)
        values = {(0, 1): x}
        for u in sched.updates:
            i, s = u.layer, u.stage
            srcs = [l for l, _ in u.inputs]
            unit = b.unit_of(srcs)
            c_in = sum(g.nodes[l]["channels"] for l in srcs)
            final = names.value_node(b.index, i, s)
            # X_i^(s) = g(sum_l W_li * X_l) [+ shortcuts, then post]: the node holding it
            # gets the paper's name, b1_x3_s2
            y = self.cat(part, names.input_node(b.index, i, s), [values[v] for v in u.inputs])
            run = [j for j, op in enumerate(unit.ops) if b.runs(op, srcs)]
            last = run[-1] if not b.adds(srcs) and not b.post else None
            n_bn = n_conv = 0
            pre_out = y
            first = len(unit.pre) if unit.first is not None else None
            for j, op in enumerate(unit.ops):
                if j not in run:
                    continue
                op = op.for_layer(i)
                if first is not None and j <= first:  # they see all the inputs
                    shape = (c_in,) + op.in_shape[1:]
                    op = dataclasses.replace(op, in_shape=shape, out_shape=shape if
                                             j < len(unit.pre) else op.out_shape)
                name = final if j == last else names.unit_op_node(final, names.op(op.kind, j))
                if op.kind == "bn":
                    target = owned(names.unit_bn(n_bn, s, i, b.bn), None,
                                   lambda op=op: op_module(op))
                    y = self.node(part, "call_module", names.key(part, target), (y,), op=op,
                                  name=name)
                    n_bn += 1
                elif op.kind == "conv":
                    if j == first:
                        weight = self.cat(part, names.update_weights_node(b.index, i, s),
                                          [w(names.weight(l, i)) for l in srcs])
                    else:
                        n_conv += 1
                        weight = w(owned(names.unit_weight(n_conv, i), (
                            op.out_shape[0], op.in_shape[0] // op.groups, *op.kernel)))
                    bias = w(owned(names.unit_bias(n_conv, i), (op.out_shape[0],))) \
                        if op.bias else None
                    y = self.node(part, "call_function", torch.conv2d,
                                  (y, weight, bias, op.stride, op.padding, 1,
                                   getattr(op, "groups", 1)), op=op, name=name)
                elif op.kind == "relu":
                    y = self.node(part, "call_function", torch.relu, (y,), op=op, name=name)
                elif op.kind == "branches":
                    target = owned(names.unit_module(i, op.kind, j), None,
                                   lambda op=op: op_module(op))
                    y = self.branches(part, names.key(part, target), op, y, name)
                else:
                    target = owned(names.unit_module(i, op.kind, j), None,
                                   lambda op=op: op_module(op))
                    y = self.node(part, "call_module", names.key(part, target), (y,), op=op,
                                  name=name)
                if j == len(unit.pre) - 1:
                    pre_out = y
            if b.merge == "add":
                y = self.residual(b, part, mod, u, y, values, pre_out, final)
            values[(i, s)] = y
        # the feature and transit concatenations stay lists: `section` concatenates them
        feature = [values[v] for v in sched.sources(b.feature)]
        transit = [values[v] for v in sched.sources(b.transit)]
        return feature, transit

    def residual(self, b, part, mod, u, y, values, pre_out, final):
        """merge add: the unit's output plus each input (X_0 through the block's shortcut
        ops where its shape differs), then the post ops; the last node is `final`."""
        i, s = u.layer, u.stage
        terms = [y]
        for l, st in u.inputs:
            v = values[(l, st)]
            if not b.added(l):
                continue
            if l == 0 and b.shortcut:
                container = names.shortcut(0, i)
                if b.shortcut_from == "pre" and pre_out is not values[(0, 1)]:
                    v = pre_out
                    if len(u.inputs) > 1:  # X_0's channels come first
                        v = self.node(part, "call_method", "narrow", (v, 1, 0, b.c0),
                                      name=names.unit_op_node(final, "pre_x0"))
                if not hasattr(mod, container):
                    holder = nn.Module()
                    for j, op in enumerate(b.shortcut):
                        holder.add_module(names.op(op.kind, j), op_module(op))
                    mod.add_module(container, holder)
                for j, op in enumerate(b.shortcut):
                    v = self.node(part, "call_module",
                                  names.key(part, container, names.op(op.kind, j)), (v,),
                                  op=op, name=names.node(names.block_tag(b.index), container,
                                                         names.value(i, s), op.kind))
            terms.append(v)
        out = terms[0]
        for k, t in enumerate(terms[1:], 1):
            done = k == len(terms) - 1 and not b.post
            out = self.node(part, "call_function", operator.add, (out, t),
                            name=final if done else names.unit_op_node(final, f"add{k}"))
        for j, op in enumerate(b.post):
            name = final if j == len(b.post) - 1 else names.unit_op_node(final, f"post{j}")
            if op.kind == "relu":
                out = self.node(part, "call_function", torch.relu, (out,), op=op, name=name)
            else:
                target = names.unit_module(i, op.kind, 100 + j)
                if not hasattr(mod, target):
                    mod.add_module(target, op_module(op))
                out = self.node(part, "call_module", names.key(part, target), (out,), op=op,
                                name=name)
        return out

    def run(self) -> fx.GraphModule:
        x = self.node(names.STEM, "placeholder", names.INPUT, name=names.INPUT)
        if self.channels_last:  # oneDNN and cuDNN convolve NHWC without layout reorders
            x = self.node(names.STEM, "call_method", "contiguous", (x,),
                          {"memory_format": torch.channels_last}, name=names.INPUT_NHWC)
        features, vecs = {}, []
        for p in ir.parts(self.net):
            if p.kind == "stem":
                x = self.section(p.name, p.ops, x, p.group)
            elif p.kind == "block":
                features[p.index], transit = self.block(p.block, x)
            elif p.kind == "transition":
                x = self.section(p.name, p.ops, transit, p.group,
                                 (names.block(p.index), names.transit_node(p.index)))
            elif p.kind == "scale":
                vecs.append(self.section(p.name, p.ops, features[p.index], p.group,
                                         (names.block(p.index), names.feature_node(p.index))))
            else:
                y = self.section(p.name, p.ops, self.cat(p.group, names.SCALES, vecs), p.group)
        self.node(names.HEAD, "output", "output", (y,))
        gm = fx.GraphModule(self.root, self.graph, class_name=_class_name(self.net.name))
        init_weights(gm)
        return gm


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Network"


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """As the paper: He normal convs (W_ij too), Xavier FCs, BN 1/0, biases 0."""
    for name, p in module.named_parameters():
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(owner, nn.Linear):
            if leaf == "weight":
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        elif isinstance(owner, (nn.BatchNorm1d, nn.BatchNorm2d)):
            (nn.init.ones_ if leaf == "weight" else nn.init.zeros_)(p)
        elif p.dim() == 4:  # conv weights, W_ij included
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.zeros_(p)


def lower(net: ir.Network, *, channels_last: bool = True, memory_efficient: bool = True,
          fused: bool = True) -> fx.GraphModule:
    """The GraphModule of an elaborated network (fresh, initialised weights), bare: `build`
    is what the rest of the package calls, as it also records what a checkpoint keeps.

    channels_last: run the network in NHWC (the input is converted once, at the stem).
    fused: run fuse.py's pass (the lean units); without it every op is its own node.
    memory_efficient (fused only): each update keeps no copy of its concatenated input for backward; the
    concatenation and BN-ReLU are recomputed there instead (as memory-efficient DenseNet).
    Measured on CPU it is faster as well as leaner, because the recomputation goes into
    reused scratch while a kept concatenation is a fresh tensor (S3, batch 16, 4 steps in a
    fresh process: about 3.5 s/step and 1.64 GB peak RSS against 4.3 s and 2.5 GB keeping
    the concatenations): so it is the default."""
    gm = _Lowering(net, channels_last).run()
    return fuse(gm, memory_efficient=memory_efficient) if fused else gm


def build(spec, /, overrides=None, *, channels_last: bool = True,
          memory_efficient: bool = True, fused: bool = True, **params) -> fx.GraphModule:
    """cliquegraph.build("specs/s3.clq", attention=False): the compiled network, the one way a
    module comes into being (the CLI, the runner, checkpoints and from_original call it).

    spec: a .clq path, spec text, or a network elaborate() made (which holds its overrides).
    params and `overrides` (a dict: what --set and a checkpoint give; also the way to set a
    param named like one of build's keywords) override the spec's params as `--set` does: a
    Python value, or a str holding .clq text ("x0 + stage1", "[8, 12, 16, 8]").
    channels_last, memory_efficient and fused are lower's.

    gm.meta["cliquegraph"]["network"] is the network, which holds what a checkpoint keeps:
    its self-contained spec text and its overrides as .clq text."""
    given = {**(overrides or {}), **params}
    if isinstance(spec, ir.Network):
        if given and {k: as_text(v) for k, v in given.items()} != dict(spec.overrides):
            raise ValueError("build(network): the network is elaborated already, with "
                             f"{dict(spec.overrides)}; elaborate it again with the overrides")
        net = spec
    elif isinstance(spec, str) and "{" in spec:  # a spec's text, not a file name
        net = elaborate("<spec>", given, text=spec, includes=False)
    else:
        net = elaborate(spec, given)
    gm = lower(net, channels_last=channels_last, memory_efficient=memory_efficient,
               fused=fused)
    gm.meta["cliquegraph"] = {"network": net}
    return gm


class Compiled(nn.Module):
    """torch.compile of a module `build` made (or of its DDP wrapper), as the runner and the
    benchmark's `compiled` variant run it: inductor, with the units' compile form
    (units._Traced), so that BN, ReLU, dropout and the concatenations are fused around the
    convolutions while backward still recomputes each update's concatenation and BN-ReLU.

    AOTAutograd's common-subexpression pass is off while it compiles: it would merge the
    recomputation in backward with the forward's concatenation and BN-ReLU and so keep them
    (measured on CIFAR k=36 T=12, batch 64: 870 MB saved for backward with it, 180 MB
    without). Compilation happens at the first call and again only for a new input shape
    (or another dtype, autocast or train/eval state)."""

    def __init__(self, module: nn.Module, **options):
        super().__init__()
        self.compiled = torch.compile(module, **options)

    @property
    def module(self) -> nn.Module:
        """The module compiled: its parameters and state_dict are the network's."""
        return self.compiled._orig_mod

    def forward(self, *args, **kwargs):
        with aot_config.patch(cse=False):
            return self.compiled(*args, **kwargs)
