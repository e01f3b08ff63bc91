"""`cliquegraph render` (registered by cli/__init__.py): diagrams of a spec or a saved
module.

The output format follows -o's extension. graphviz, matplotlib and torch are imported only when
the command runs, so registering it keeps `cliquegraph check` light.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .args import UsageError, add_set, parse_sets

VIEWS = ("block", "network", "schedule", "weights")
PICTURES = (".svg", ".png", ".pdf")
FORMATS = {  # per view: the extensions -o may have; no -o prints the text form to stdout
    "block": PICTURES + (".dot",),
    "network": PICTURES + (".dot",),
    "schedule": (".json", ".txt"),
    "weights": PICTURES,
}
CHECKPOINTS = (".pt", ".pth")

EXAMPLES = """\
examples:
  cliquegraph render specs/cliquenet-cifar.clq --view block --block 2 -o block2.svg
  cliquegraph render specs/cliquenet-cifar.clq --view network -o network.pdf
  cliquegraph render specs/cliquenet-cifar.clq --set T=15 --view schedule
  cliquegraph render model.pt --view weights -o weights.png

formats: block/network .svg .png .pdf (need graphviz's `dot`) or .dot (the source; also what
stdout gets without -o); schedule .txt (also stdout) or .json; weights .png .svg .pdf."""


def register(sub):
    r = sub.add_parser(
        "render", usage="cliquegraph render SPEC-or-CHECKPOINT --view VIEW [-o FILE] [options]",
        help="draw a block, the network, a block's schedule or a checkpoint's weights",
        description="Draw a spec (or a checkpoint's network) as the paper does:\n"
                    "  block     a block's X_0..X_n with one edge per W_ij (Fig. 1)\n"
                    "  network   stem, blocks, transitions, head, with shapes (Fig. 2)\n"
                    "  schedule  a block's ordered updates (Table 1)\n"
                    "  weights   a checkpoint's mean |W_ij| per block (Fig. 5)",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("source", metavar="SPEC-or-CHECKPOINT",
                   help="a .clq spec, or a .pt checkpoint (compile --save, the runner)")
    add_set(r)
    r.add_argument("--view", required=True, choices=VIEWS, help="what to draw")
    r.add_argument("--block", type=int, metavar="N",
                   help="which block, from 1 (block and schedule views: default 1; "
                        "weights: default all blocks)")
    r.add_argument("-o", "--output", metavar="FILE",
                   help="where to write; the extension picks the format (see below)")
    r.add_argument("--labels", action="store_true",
                   help="block view: channels on nodes, kernel and in->out on edges")
    r.set_defaults(func=cmd_render)


def dot_missing(path) -> str:
    return (f"cannot write {path}: graphviz's `dot` program is not installed "
            f"(apt-get install graphviz, or brew install graphviz); "
            f"-o FILE.dot writes the diagram's source without it")


def cmd_render(args) -> int:
    from ..elaborate import elaborate

    overrides = parse_sets(args.set)
    view, path = args.view, args.output
    ext = os.path.splitext(path)[1].lower() if path else None
    if ext is not None and ext not in FORMATS[view]:
        raise UsageError(f"--view {view} writes {' '.join(FORMATS[view])} files, not "
                         f"{ext or 'a file without an extension'} ({path})")
    if view == "weights" and path is None:
        raise UsageError("--view weights draws a picture: give -o FILE.png (or .svg, .pdf)")
    if args.labels and view != "block":
        raise UsageError("--labels applies to --view block")
    if args.block is not None and view == "network":
        raise UsageError("--block applies to the block, schedule and weights views")
    checkpoint = os.path.splitext(args.source)[1].lower() in CHECKPOINTS
    if view == "weights" and not checkpoint:
        raise UsageError(f"--view weights needs a checkpoint (a .pt file written by "
                         f"`cliquegraph compile --save` or the runner), and {args.source} "
                         f"is a spec: a spec has no trained weights")
    if checkpoint and overrides:
        raise UsageError("--set applies to a spec; a checkpoint keeps the params it was "
                         "built with")
    if ext in PICTURES and view in ("block", "network") and shutil.which("dot") is None:
        print(dot_missing(path), file=sys.stderr)  # before any slow loading
        return 1

    state = None
    if checkpoint:
        from ..checkpoint import load_module
        _, net, obj = load_module(args.source)  # a CheckpointError reaches main(): exit 1
        state = obj["state_dict"]
    else:
        net = elaborate(args.source, overrides)  # a SpecError reaches main(): exit 1
    if args.block is not None and not 1 <= args.block <= len(net.blocks):
        raise UsageError(f"--block {args.block}: network {net.name} has blocks "
                         f"1..{len(net.blocks)}")

    from .. import render
    try:
        if view == "block":
            block = net.blocks[(args.block or 1) - 1]
            return _diagram(render.block_diagram(block, labels=args.labels), path, ext)
        if view == "network":
            return _diagram(render.network_diagram(net), path, ext)
        if view == "schedule":
            block = net.blocks[(args.block or 1) - 1]
            if ext == ".json":
                _write(path, _json_lines(render.schedule_data(block)))
            elif path:
                _write(path, render.schedule_text(block))
            else:
                sys.stdout.write(render.schedule_text(block))
            return 0
        fig = render.weights_figure(state, net, block=args.block)
        fig.savefig(path, dpi=150)
        return 0
    except OSError as err:
        print(f"cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return 1


def _diagram(dg, path, ext) -> int:
    """Write a graphviz diagram in the format of path's extension (stdout: the DOT source)."""
    import graphviz

    if path is None:
        sys.stdout.write(dg.source)
        return 0
    if ext == ".dot":
        _write(path, dg.source)
        return 0
    if ext == ".png":  # a raster for screens: twice graphviz's 72 dpi default
        dg = dg.copy()
        dg.attr(dpi="144")
    try:
        data = dg.pipe(format=ext[1:])
    except graphviz.ExecutableNotFound:
        print(dot_missing(path), file=sys.stderr)
        return 1
    except graphviz.CalledProcessError as err:
        why = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        print(f"cannot write {path}: dot failed: {why[-1] if why else err}", file=sys.stderr)
        return 1
    with open(path, "wb") as fh:
        fh.write(data)
    return 0


def _json_lines(data) -> str:
    """A JSON list with one update per line: valid JSON that still reads like the table."""
    import json
    return "[\n" + ",\n".join("  " + json.dumps(d) for d in data) + "\n]\n"


def _write(path, text) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
