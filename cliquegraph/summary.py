"""Summaries of a compiled network: parameters (from the module) and FLOPs (2 x multiply-adds,
counted by torch.utils.flop_counter on one image at the spec's input size), per part."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from . import ir
from .cli import plural


@dataclass(frozen=True)
class Part:
    name: str          # stem, block1, transition1, ..., head
    params: int
    flops: int
    in_shape: tuple
    out_shape: tuple
    layers: int = 0
    width: int = 0
    stages: int = 0


class _CountingInterpreter(fx.Interpreter):
    """Runs the graph node by node, charging each node's FLOPs to its part (node.meta)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.flops: dict[str, int] = {}

    def run_node(self, n):
        with FlopCounterMode(display=False) as counter:
            out = super().run_node(n)
        part = n.meta.get("part", "head")
        self.flops[part] = self.flops.get(part, 0) + counter.get_total_flops()
        return out


def count_flops(gm, input_shape) -> dict:
    """{part: flops} for one image. Runs a copy of gm on the meta device: shapes only, no
    arithmetic, so counting a large network is quick; gm itself is untouched."""
    meta = copy.deepcopy(gm).to("meta").eval()
    with torch.no_grad():
        interp = _CountingInterpreter(meta)
        interp.run(torch.zeros(1, *input_shape, device="meta"))
    return interp.flops


def _params_of(gm, prefix):
    return sum(p.numel() for name, p in gm.named_parameters()
               if name == prefix or name.startswith(prefix + "."))


def summarize(gm, net: ir.Network) -> list:
    flops = count_flops(gm, net.input_shape)
    parts = []
    stem_out = net.stem[-1].out_shape if net.stem else net.input_shape
    parts.append(Part("stem", _params_of(gm, "stem"), flops.get("stem", 0), net.input_shape,
                      stem_out))
    for b in net.blocks:
        out = (b.transit_channels if b.transit else b.feature_channels,) + b.in_shape[1:]
        parts.append(Part(f"block{b.index}", _params_of(gm, f"block{b.index}"),
                          flops.get(f"block{b.index}", 0), b.in_shape, out, b.layers, b.width,
                          b.stages))
        if b.index <= len(net.transitions):
            ops = net.transitions[b.index - 1]
            parts.append(Part(f"transition{b.index}", _params_of(gm, f"transition{b.index}"),
                              flops.get(f"transition{b.index}", 0), ops[0].in_shape,
                              ops[-1].out_shape))
    head_params = sum(_params_of(gm, f"head{s}") for s in net.scales) + \
        _params_of(gm, "classifier")
    head_in = tuple(b.feature_channels for b in net.blocks if b.index in net.scales)
    parts.append(Part("head", head_params, flops.get("head", 0), head_in, (net.outputs,)))
    return parts


def _shape(s):
    return "x".join(map(str, s))


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return str(int(x))


def table(parts, net) -> str:
    rows = [("part", "layers", "k", "stages", "input", "output", "params", "FLOPs")]
    for p in parts:
        if p.name == "head":
            inp = "+".join(map(str, p.in_shape))
        else:
            inp = _shape(p.in_shape)
        rows.append((p.name, str(p.layers or ""), str(p.width or ""), str(p.stages or ""), inp,
                     _shape(p.out_shape), f"{p.params:,}", _si(p.flops)))
    total_p, total_f = sum(p.params for p in parts), sum(p.flops for p in parts)
    rows.append(("total", "", "", "", "", "", f"{total_p:,}", _si(total_f)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.ljust(w) if i in (0, 4, 5) else c.rjust(w) for i, (c, w) in
                 enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0 or n == len(rows) - 2:
            lines.append("-" * len(lines[0]))
    head = f"{net.name}  ({net.path}), input {_shape(net.input_shape)}, {plural(net.outputs, 'output')}"
    return head + "\n" + "\n".join(lines)


def as_json(parts, net) -> dict:
    return {
        "network": net.name, "spec": net.path, "input": list(net.input_shape),
        "outputs": net.outputs,
        "params": sum(p.params for p in parts), "flops": sum(p.flops for p in parts),
        "blocks": [{"block": int(p.name[5:]), "layers": p.layers, "k": p.width,
                    "stages": p.stages, "input": list(p.in_shape), "output": list(p.out_shape),
                    "params": p.params, "flops": p.flops}
                   for p in parts if p.name.startswith("block")],
        "parts": [{"name": p.name, "params": p.params, "flops": p.flops} for p in parts],
    }
