"""Render: diagrams of the IR, as the paper draws them.

    block_diagram(block)      a block's X_0..X_n and one edge per W_ij (Figure 1)
    network_diagram(net)      stem -> blocks -> transitions -> head, with shapes (Figure 2)
    schedule_data(block)      the ordered updates, as plain lists and dicts (JSON-ready)
    schedule_text(block)      the same in the layout of Table 1
    weights_figure(sd, net)   mean |W_ij| per block as heatmaps (Figure 5)

The diagrams are `graphviz.Digraph` objects: they display inline in Jupyter, `.source` is the
DOT text, `.render()`/`.pipe()` run graphviz's `dot`. The block view needs only `dot` too: its
circular layout is pinned in the source (`layout=neato`, which `dot` runs itself).
The heatmaps are a matplotlib `Figure` made without pyplot, so nothing global changes.
"""

from __future__ import annotations

import html
import math

from . import ir, names, ops, schedule as _schedule
from .errors import plural

FONT = "Helvetica"
# W_ij colours: from X_0 (Stage I only), i < j (every stage), i > j (stages II and on only).
INPUT_EDGE, FORWARD_EDGE, BACKWARD_EDGE = "#9a9a9a", "#2f6db5", "#d9822b"
LAYER_FILL, LAYER_LINE = "#dbe8f6", "#3b6ea8"
INPUT_FILL, INPUT_LINE = "#eeeeee", "#555555"


def roman(n: int) -> str:
    """Stage numbers as the paper writes them: 1 -> I, 2 -> II, 4 -> IV."""
    out = ""
    for value, digits in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                          (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                          (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + digits, n - value
    return out


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _x(i) -> str:
    """X_i for an HTML-like graphviz label."""
    return f"X<SUB>{i}</SUB>"


def _sources_text(sources) -> str:
    """('x0', 'stage2') -> 'X_0 + Stage II', ('xn',) -> 'X_n' (HTML-like)."""
    return " + ".join(_x(0) if s == "x0" else _x("n") if s == "xn" else
                      f"Stage {roman(int(s[len('stage'):]))}" for s in sources)


# --- block view -------------------------------------------------------------------------------

def block_diagram(block: ir.Block, labels: bool = False):
    """One block as a graph over X_0..X_n with one edge per W_ij.

    X_0..X_n sit on a circle, X_0 on the left, as in the paper's Figure 1; a pair W_ij, W_ji
    is two arcs bending apart. With `labels`, nodes show their channels and edges
    their kernel and in -> out channels."""
    import graphviz

    g, n = block.graph, block.layers
    dg = graphviz.Digraph(names.block(block.index))
    # X_0..X_n at the corners of a regular polygon: no W_ij can pass behind another node.
    # Neighbours stay about an inch apart whatever n is.
    radius = max(1.3, 0.17 * (n + 1)) * (1.25 if labels else 1.0)
    dg.attr(layout="neato", splines="curved", outputorder="edgesfirst", pad="0.3",
            fontname=FONT, fontsize="11", labelloc="b", label=_block_caption(block))
    size = "0.75" if labels else "0.55"
    dg.attr("node", shape="circle", style="filled", fillcolor=LAYER_FILL, color=LAYER_LINE,
            fontname=FONT, fontsize="14", width=size, height=size, fixedsize="true")
    thin = g.number_of_edges() > 60  # a big clique is a disc of edges: keep the nodes readable
    dg.attr("edge", arrowsize="0.4" if thin else "0.6", penwidth="0.6" if thin else "1.1",
            fontname=FONT, fontsize="8")
    for i in range(n + 1):
        # X_0 on the left, then X_1, X_2, ... clockwise.
        angle = math.pi - 2 * math.pi * i / (n + 1)
        label = _x(i)
        if labels:
            label += f'<BR/><FONT POINT-SIZE="9">{g.nodes[i]["channels"]}</FONT>'
        extra = dict(shape="box", style="rounded,filled", fillcolor=INPUT_FILL,
                     color=INPUT_LINE) if i == 0 else {}
        dg.node(f"x{i}", f"<{label}>",
                pos=f"{radius * math.cos(angle):.3f},{radius * math.sin(angle):.3f}!", **extra)

    for i, j, d in sorted(g.edges(data=True), key=lambda e: (e[0] != 0, e[0], e[1])):
        colour = INPUT_EDGE if i == 0 else FORWARD_EDGE if i < j else BACKWARD_EDGE
        attrs = {"color": colour, "id": names.weight(i, j), "tooltip": f"W_{i},{j}"}
        if labels and d["kernel"] is not None:  # (a unit starting with branches: no W_ij)
            kh, kw = d["kernel"]
            attrs.update(label=f"{kh}x{kw} {d['in_channels']}→{d['out_channels']}",
                         fontcolor=colour)
        dg.edge(f"x{i}", f"x{j}", **attrs)
    return dg


def _block_caption(block: ir.Block) -> str:
    g = block.graph
    kinds = {(i == 0, i < j) for i, j in g.edges()}
    legend = []
    for key, colour, text in (((True, True), INPUT_EDGE, f"from {_x(0)} (Stage I)"),
                              ((False, True), FORWARD_EDGE, "W<SUB>ij</SUB>, i &lt; j"),
                              ((False, False), BACKWARD_EDGE,
                               "W<SUB>ij</SUB>, i &gt; j (Stage II on)")):
        if key in kinds:
            legend.append(f'<FONT COLOR="{colour}">━━</FONT> {text}')
    title = (f"<B>block {block.index}</B>: {html.escape(block.topology)}, "
             f"{plural(block.layers, 'layer')}, k = {block.width}, {g.number_of_edges()} W<SUB>ij</SUB>")
    return (f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="3"><TR><TD>{title}</TD></TR>'
            f'<TR><TD>{" &nbsp; ".join(legend)}</TD></TR></TABLE>>')


# --- network view -----------------------------------------------------------------------------

def _op_lines(section) -> list:
    """Ops as the paper writes them: BN and ReLU prefix the op they feed ('BN-ReLU-conv 1x1')."""
    lines, prefix = [], []
    for op in section:
        kind = ops.KINDS[op.kind]
        if kind.prefix:
            prefix.append(kind.label(op))
            continue
        lines.append("-".join(prefix + [kind.label(op)]))
        prefix = []
    if prefix:
        lines.append("-".join(prefix))
    return lines


def _box(title: str, lines) -> str:
    body = "".join(f'<BR/><FONT POINT-SIZE="10">{line}</FONT>' for line in lines)
    return f"<<B>{title}</B>{body}>"


def _block_lines(b: ir.Block) -> list:
    lines = [f"{html.escape(b.topology)}, {plural(b.layers, 'layer')}, k = {b.width}",
             f"{b.stages} stage{'s' if b.stages > 1 else ''}"
             + (f", last stage {plural(b.steps, 'step')}" if b.steps is not None and b.stages > 1 else "")]
    kernel = "x".join(map(str, b.kernel))
    lines.append(f"bottleneck 1x1 → {b.bottleneck}, then {kernel}" if b.bottleneck
                 else f"W<SUB>ij</SUB> {kernel}")
    return lines


def network_diagram(net: ir.Network):
    """The whole network as the paper's Figure 2: the main path left to right (input, stem,
    block 1, transition 1, ...), each edge labelled with its tensor shape; below it, the block
    features that reach the head (what feeds the loss) and the head itself."""
    import graphviz

    from .elaborate import count_params
    dg = graphviz.Digraph(net.name)
    dg.attr(rankdir="TB", nodesep="0.45", ranksep="0.6", pad="0.3", fontname=FONT,
            fontsize="12", labelloc="t",
            label=f"<<B>{html.escape(net.name)}</B>: {count_params(net):,} parameters>")
    dg.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="12",
            color="#555555", fillcolor="#f4f4f4", margin="0.15,0.08")
    dg.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.7", color="#444444")

    parts = list(ir.parts(net))
    main = [p for p in parts if p.kind in ("stem", "block", "transition")]
    scales = [p for p in parts if p.kind == "scale"]
    with dg.subgraph(name="main") as row:
        row.attr(rank="same")
        row.node("input", "<<B>input</B>>", shape="plain", style="")
        for p in main:
            row.node(p.name, **_main_box(p))
    prev = "input"
    for p in main:
        label = shape_text(p.in_shape)
        if p.kind == "transition":
            label = (f'<<FONT COLOR="#b8731f"><B>transit</B> {_sources_text(p.block.transit)}'
                     f'</FONT><BR/>{label}>')
        dg.edge(prev, p.name, label=label, id=f"{prev}-{p.name}")
        prev = p.name

    # The head: each scale's block feature -> its own ops -> concatenated -> classifier.
    with dg.subgraph(name="scales") as row:
        row.attr(rank="same")
        for p in scales:
            row.node(f"scale{p.index}", _box(f"block {p.index} feature", _op_lines(p.ops)),
                     fillcolor="#e6f2e1", color="#4a8a3a")
    for p in scales:
        block = names.block(p.index)
        dg.edge(block, f"scale{p.index}", color="#4a8a3a", style="dashed",
                label=(f'<<FONT COLOR="#4a8a3a"><B>feature</B> '
                       f'{_sources_text(p.block.feature)}</FONT><BR/>{shape_text(p.in_shape)}>'),
                id=f"{block}-feature")
        dg.edge(f"scale{p.index}", "head", label=shape_text(p.out_shape), color="#4a8a3a")
    width = parts[-1].in_shape[0]  # the classifier reads the scales' vectors concatenated
    lines = ([f"concat → {width}"] if len(scales) > 1 else []) + _op_lines(net.head)
    dg.node("head", _box("head", lines or ["identity"]), fillcolor="#e6f2e1", color="#4a8a3a")
    dg.node("loss", "<<B>loss</B>>", shape="plain", style="")
    dg.edge("head", "loss", label=str(net.outputs))
    return dg


def _main_box(p: ir.Part) -> dict:
    """The graphviz node of a stem, block or transition."""
    if p.kind == "block":
        return dict(label=_box(f"block {p.index}", _block_lines(p.block)),
                    fillcolor=LAYER_FILL, color=LAYER_LINE)
    lines = _op_lines(p.ops) or ["identity"]
    if p.kind == "stem":
        return dict(label=_box("stem", lines), fillcolor="#eeeeee")
    return dict(label=_box(f"transition {p.index}", lines), fillcolor="#fdf0e0",
                color="#b8731f")


# --- schedule view ----------------------------------------------------------------------------

def schedule_data(block: ir.Block) -> list:
    """The block's updates in execution order: {"layer": i, "stage": s, "inputs": [[j, s_j],
    ...]}, inputs in concatenation order, X_0 as layer 0 at stage 1."""
    return [{"layer": u.layer, "stage": u.stage, "inputs": [list(x) for x in u.inputs]}
            for u in _schedule.schedule(block).updates]


def schedule_text(block: ir.Block) -> str:
    """The updates in the layout of the paper's Table 1: a header per stage, then one line per
    update, e.g. `X_3^(2) <- {X_4^(1), X_5^(1), X_1^(2), X_2^(2)}`."""
    out, stage = [], None
    for u in _schedule.schedule(block).updates:
        if u.stage != stage:
            stage = u.stage
            header = f"Stage {roman(stage)}"
            if stage == block.stages and block.steps is not None and stage > 1:
                header += f" (first {block.steps} updates)"
            out += ([""] if out else []) + [header]
        out.append(str(u))
    return "\n".join(out) + "\n"


# --- weights view -----------------------------------------------------------------------------

def weight_means(state_dict, block: ir.Block):
    """mean |W_ij| of one block as an (n+1) x n array: row i = source X_i (X_0..X_n), column
    j-1 = target X_j; NaN where the block has no W_ij. `state_dict` holds the weight of W_ij
    of block b at `block{b}.w_{i}_{j}` (torch tensors or numpy arrays)."""
    import numpy as np

    n = block.layers
    out = np.full((n + 1, n), np.nan)
    for i, j in block.graph.edges():
        key = names.key(names.block(block.index), names.weight(i, j))
        if key not in state_dict:
            raise KeyError(f"the weights have no {key}: they are not this network's")
        w = state_dict[key]
        out[i, j - 1] = float(abs(w.detach() if hasattr(w, "detach") else w).mean())
    return out


def weights_figure(state_dict, net: ir.Network, block=None):
    """Heatmaps of mean |W_ij| (rows: source X_0..X_n, columns: target X_1..X_n; blank where
    there is no W_ij), one per block or only block `block` (1-based), as in the paper's
    Figure 5. Returns a matplotlib Figure (not attached to pyplot)."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if block is not None and not 1 <= block <= len(net.blocks):
        raise ValueError(f"{net.name} has blocks 1..{len(net.blocks)}, not {block}")
    blocks = net.blocks if block is None else (net.blocks[block - 1],)
    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    side = max(3.2, min(0.32 * max(b.layers for b in blocks) + 1.6, 9.0))
    fig = Figure(figsize=(side * 1.2 * len(blocks), side + 0.6), layout="constrained")
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for ax, b in zip(axes, blocks):
        means = weight_means(state_dict, b)
        im = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, interpolation="nearest")
        n, step = b.layers, max(1, math.ceil(b.layers / 16))
        ax.set_xticks(range(0, n, step), [f"$X_{{{j}}}$" for j in range(1, n + 1, step)])
        ax.set_yticks(range(0, n + 1, step), [f"$X_{{{i}}}$" for i in range(0, n + 1, step)])
        ax.set_xlabel("target layer $X_j$")
        ax.set_ylabel("source $X_i$")
        ax.set_title(f"block {b.index} ({b.topology}, {plural(n, 'layer')})")
        ax.tick_params(length=0)
        fig.colorbar(im, ax=ax, shrink=0.85, label=r"mean $|W_{ij}|$")
    fig.suptitle(f"{net.name}: mean $|W_{{ij}}|$ (grey: no $W_{{ij}}$)")
    return fig
