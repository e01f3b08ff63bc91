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

import torch
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
            x = self.node(part, "call_module", names.key(container, name), (x,),
                          name=names.node(container, name), op=op)
            x.meta["weight_node"] = names.section_weight_node(container, j)
        return x

    def unit(self, mod, part, unit_name, x, w, shape, out, kernel, padding, dropout, name):
        """The paper's g as plain ops: BN (module `unit_name`, one per update, or per layer
        for the loop stages with `bn shared`) -> ReLU -> conv reading the weights `w` ->
        dropout; fuse.py makes the chain one unit. shape, out: its input and output (C, H, W).
        The last node is `name`, the others `name` with their op's kind."""
        if not hasattr(mod, unit_name):
            mod.add_module(unit_name, nn.BatchNorm2d(shape[0]))
        chain = [(ops.node("bn", shape, shape), "call_module", names.key(part, unit_name)),
                 (ops.node("relu", shape, shape), "call_function", torch.relu),
                 (ops.node("conv", shape, out, kernel=kernel, padding=padding), "call_function",
                  torch.conv2d)]
        if dropout:
            drop = ops.node("dropout", out, out, p=dropout)
            if not hasattr(mod, names.DROPOUT):
                mod.add_module(names.DROPOUT, op_module(drop))
            chain.append((drop, "call_module", names.key(part, names.DROPOUT)))
        for k, (op, how, target) in enumerate(chain):
            args = (x, w, None, 1, padding) if target is torch.conv2d else (x,)
            x = self.node(part, how, target, args, op=op,
                          name=name if k == len(chain) - 1 else names.unit_op_node(name, op.kind))
        return x

    def block(self, b: ir.Block, x):
        part, tag = names.block(b.index), names.block_tag(b.index)
        mod = nn.Module()
        setattr(self.root, part, mod)
        g = b.graph
        for i, j, d in g.edges(data=True):
            kh, kw = d["kernel"]
            mod.register_parameter(names.weight(i, j), nn.Parameter(
                torch.empty(d["out_channels"], d["in_channels"], kh, kw)))
        if b.bottleneck:
            for j in range(1, b.layers + 1):
                mod.register_parameter(names.bottleneck_weight(j), nn.Parameter(
                    torch.empty(b.width, b.bottleneck, *b.kernel)))
        weights = {}

        def w(name):  # one get_attr per shared weight, read by every stage
            if name not in weights:
                weights[name] = self.node(part, "get_attr", names.key(part, name), (),
                                          name=names.node(tag, name))
            return weights[name]

        hw = b.in_shape[1:]
        same = (b.kernel[0] // 2, b.kernel[1] // 2)
        w_kernel = (1, 1) if b.bottleneck else b.kernel
        sched = schedule(b)
        values = {(0, 1): x}
        for u in sched.updates:
            i, s = u.layer, u.stage
            wcat = self.cat(part, names.update_weights_node(b.index, i, s),
                            [w(names.weight(l, i)) for l, _ in u.inputs])
            xs = self.cat(part, names.input_node(b.index, i, s), [values[v] for v in u.inputs])
            c_in = sum(g.nodes[l]["channels"] for l, _ in u.inputs)
            # X_i^(s) = g(sum_l W_li * X_l) (dropout included): the node holding it gets the
            # paper's name, b1_x3_s2
            final = names.value_node(b.index, i, s)
            y = self.unit(mod, part, names.update_unit(s, i, b.bn), xs, wcat, (c_in,) + hw,
                          (b.bottleneck or b.width,) + hw, w_kernel,
                          (0, 0) if b.bottleneck else same, b.dropout,
                          names.mid_node(b.index, i, s) if b.bottleneck else final)
            if b.bottleneck:
                y = self.unit(mod, part, names.bottleneck_unit(s, i, b.bn), y,
                              w(names.bottleneck_weight(i)), (b.bottleneck,) + hw,
                              (b.width,) + hw, b.kernel, same, b.dropout, final)
            values[(i, s)] = y
        # the feature and transit concatenations stay lists: `section` concatenates them
        feature = [values[v] for v in sched.sources(b.feature)]
        transit = [values[v] for v in sched.sources(b.transit)]
        return feature, transit

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
