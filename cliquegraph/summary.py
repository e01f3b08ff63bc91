"""Summaries of a compiled network: parameters (from the module) and FLOPs (2 x multiply-adds,
counted by torch.utils.flop_counter on one image at the spec's input size), per part."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from . import ir, names
from .errors import plural


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
    block: int = 0     # the block's number, for a block's row


class _CountingInterpreter(fx.Interpreter):
    """Runs the graph node by node, charging each node's FLOPs to its part (node.meta)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.flops: dict[str, int] = {}

    def run_node(self, n):
        with FlopCounterMode(display=False) as counter:
            out = super().run_node(n)
        part = n.meta.get("part", names.HEAD)
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
    """One Part per stem, block and transition, and one for the whole head."""
    flops = count_flops(gm, net.input_shape)
    groups: dict[str, list] = {}
    for p in ir.parts(net):
        groups.setdefault(p.group, []).append(p)
    out = []
    for name, members in groups.items():
        first, b = members[0], members[0].block
        if name == names.HEAD:  # in block order, as the table has always listed them
            in_shape = tuple(p.in_shape[0] for p in sorted(members, key=lambda p: p.index)
                             if p.kind == "scale")
        else:
            in_shape = first.in_shape
        size = (b.layers, b.width, b.stages) if first.kind == "block" else ()
        out.append(Part(name, sum(_params_of(gm, p.name) for p in members),
                        flops.get(name, 0), in_shape, members[-1].out_shape, *size,
                        block=first.index if first.kind == "block" else 0))
    return out


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
        if p.name == names.HEAD:
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
        "blocks": [{"block": p.block, "layers": p.layers, "k": p.width,
                    "stages": p.stages, "input": list(p.in_shape), "output": list(p.out_shape),
                    "params": p.params, "flops": p.flops}
                   for p in parts if p.block],
        "parts": [{"name": p.name, "params": p.params, "flops": p.flops} for p in parts],
    }
