"""The op table: every kind of op a stem, transition or head can hold, each defined once.

An entry (`Kind`) says everything the pipeline needs to know of its kind: how it is written
(`Syntax`: the grammar rule's operands, the canonical text fmt prints, how the elaborator
resolves its shape), how many parameters it owns, its nn.Module, its reference behaviour, its
label in diagrams and the memory its training step keeps. parse, fmt, elaborate, ir, lower,
reference, render and estimate all read this table instead of testing `op.kind` themselves.
Adding a kind is one entry here plus its line in grammars/clq.lark.

Kinds are the IR's; a written op (`Syntax.word`, the AST's kind) may resolve to several, as
`pool` does to maxpool, avgpool, apool (adaptive) and gpool. `scales` is a head statement, not
an op, and stays with the head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import importlib

from . import ast, names
from .errors import did_you_mean


class _Later:
    """A module imported when first used: check and fmt read this table and must not pay for
    importing torch."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name, __package__), attr)


torch, nn, F = _Later("torch"), _Later("torch.nn"), _Later("torch.nn.functional")
units = _Later(".units")


# --- the IR of an op: the fields every op has, and one small dataclass per family -------------

@dataclass(frozen=True)
class Op:
    """A resolved op of a stem, transition or head (`ir.Op`). kind: a kind of this table.
    Shapes are (C, H, W) for maps and (C,) for vectors (after `pool global`). Kinds with
    operands have their own subclass (`Kind.node`): Conv, Pool, Dropout, SE, BN, DropPath."""
    kind: str
    in_shape: tuple
    out_shape: tuple

    def params(self) -> int:
        return KINDS[self.kind].params(self)

    def for_layer(self, i: int) -> "Op":
        """The op as layer i of its block runs it (the same, but for a rate set per layer)."""
        return self


@dataclass(frozen=True)
class Conv(Op):
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    bias: bool = False
    groups: int = 1


@dataclass(frozen=True)
class Pool(Op):
    """maxpool, avgpool and apool (`pool adaptive HxW`: `kernel` is then its output size, and
    stride and padding stay (1, 1) and (0, 0)); gpool has no operands. ceil: the output
    size rounds up (PyTorch's ceil_mode)."""
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    ceil: bool = False


@dataclass(frozen=True)
class Branches(Op):
    """Paths run on the input (split: path k on its k-th share of the channels), their
    outputs concatenated; `paths` holds each path's ops (empty: the input itself)."""
    paths: tuple = ()
    split: bool = False

    def leaves(self):
        """Every op inside but nested branches, whose ops come instead, depth first."""
        for path in self.paths:
            for op in path:
                if op.kind == "branches":
                    yield from op.leaves()
                else:
                    yield op


@dataclass(frozen=True)
class Shuffle(Op):
    groups: int = 1


@dataclass(frozen=True)
class Dropout(Op):
    p: float = 0.0


@dataclass(frozen=True)
class SE(Op):
    """se and cbam: `hidden` is the width of the squeeze (of cbam's channel-gate MLP); se's
    activation after it and its gate."""
    hidden: int = 0
    act: str = "relu"
    gate: str = "sigmoid"


@dataclass(frozen=True)
class BN(Op):
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class DropPath(Op):
    """Stochastic depth: `p`, or with `linear` the rate of the last layer, the network's
    layers that run this op dropping at p * u / N (u from 0 over the N such layers, in the
    order the blocks and their layers come: torchvision's EfficientNet); `rates` then holds
    each layer's of the block, set by the elaborator once every block is known."""
    p: float = 0.0
    linear: bool = False
    rates: tuple = ()

    def for_layer(self, i: int) -> "Op":
        return replace(self, p=self.rates[i - 1]) if self.rates else self


def node(kind: str, in_shape, out_shape, **fields) -> Op:
    """The IR op of `kind` (its dataclass is the table's)."""
    return KINDS[kind].node(kind, tuple(in_shape), tuple(out_shape), **fields)


@dataclass(frozen=True)
class Syntax:
    """How an op is written. `parse(c, tf)` turns the rule's children into the AST op's args
    (tf, parse's transformer, gives `error(msg, token, hint)` and `token_name(token)`);
    `text(o, show)` is fmt's canonical line, show(e, atom=False, after_atom=False) printing an
    operand; `resolve(r, shape)` returns the IR kind, output shape and its node's fields, asking `r`
    (elaborate's rules) for the operands.
    `on` is what the op accepts: a feature map, a vector (after `pool global`) or any."""
    word: str                      # the AST kind, and the first word of the op in a spec
    rule: str                      # its grammar rule
    parse: Callable
    text: Callable
    resolve: Callable
    on: str = "any"                # any | map | vector


@dataclass(frozen=True)
class Kind:
    """One IR op kind. `reference(op, get, x, training)` is its naive behaviour, reading its
    parameters with get(*leaf); `largest(op)` the elements of its largest parameter tensor.
    Memory, per training step (estimate.py): `saves` which tensor its backward keeps (input |
    output | none), `kept` bytes it keeps per output element (masks, indices), `scratch` whether
    its forward writes a second buffer the size of its output, `draws` whether it draws a random
    number per element, `stats(op)` the channels it keeps running statistics of."""
    name: str
    syntax: Syntax
    module: Callable
    reference: Callable
    label: Callable
    node: type = Op                # its IR dataclass
    params: Callable = lambda op: 0
    largest: Callable = lambda op: 0
    prefix: bool = False           # drawn in front of the op it feeds: BN-ReLU-conv 1x1
    saves: str = "none"
    kept: int = 0
    scratch: bool = False
    draws: bool = False
    stats: Callable = lambda op: 0


def _show_opts(o, show, parts):
    for name in ("stride", "padding"):
        if o.arg(name) is not None:
            parts += [name, show(o.arg(name))]
    return " ".join(parts)


def _with_opts(args, c):
    for opt in c:
        args[opt[0]] = opt[1]
    return args


def _word(word):
    """An op that is its word alone, with no operands (bn, relu)."""
    return dict(parse=lambda c, tf: {}, text=lambda o, show: word,
                resolve=lambda r, shape: (word, shape, {}))


# --- conv -------------------------------------------------------------------------------------

def _conv_text(o, show):
    kernel, out = show(o.arg("kernel"), atom=True), show(o.arg("out"), after_atom=True)
    if isinstance(o.arg("kernel"), ast.Name) and out.startswith("("):
        kernel = f"({kernel})"  # `conv k (C + 1) // 2` would read as a call k(C + 1)
    text = _show_opts(o, show, ["conv", kernel, out])
    if o.arg("groups") is not None:
        text += f" groups {show(o.arg('groups'))}"
    return text + " bias" if o.arg("bias") is not None else text


def _conv_resolve(r, shape):
    kern = r.pair("kernel", "kernel", 1, r.limit("kernel"))
    out = r.whole("out", "conv width", 1, r.limit("channels"))
    stride = r.opt_pair("stride", (1, 1), 1)
    padding = r.opt_pair("padding", (kern[0] // 2, kern[1] // 2), 0)
    groups = r.whole("groups", "groups", 1, r.limit("channels")) if r.has("groups") else 1
    if shape[0] % groups or out % groups:
        raise r.err(f"groups {groups} must divide the conv's input width {shape[0]} and its "
                    f"output width {out}")
    hw = r.spatial(shape, kern, stride, padding, "conv")
    return "conv", (out,) + hw, dict(kernel=kern, stride=stride, padding=padding,
                                     bias=r.has("bias"), groups=groups)


def _conv_params(op):
    return _conv_weight(op) + (op.out_shape[0] if op.bias else 0)


def _conv_weight(op):
    return op.out_shape[0] * op.in_shape[0] // op.groups * op.kernel[0] * op.kernel[1]


_CONV = Syntax("conv", "conv", parse=lambda c, tf: _with_opts({"kernel": c[0], "out": c[1]},
                                                                 c[2:]),
               text=_conv_text, resolve=_conv_resolve, on="map")


# --- pooling ----------------------------------------------------------------------------------

def _pool_parse(c, tf):
    mode = str(c[0])
    if mode not in ("avg", "max", "global", "adaptive"):
        raise tf.error(f"unknown pooling {mode!r}", c[0],
                       did_you_mean(mode, ["avg", "max", "global", "adaptive"])
                       or "pooling is `avg K`, `max K`, `global` or `adaptive HxW`")
    args = {"mode": tf.token_name(c[0])}
    if c[1] is not None:
        args["kernel"] = c[1]
    elif mode == "adaptive":
        raise tf.error("`pool adaptive` needs its output size, e.g. `pool adaptive 1` or "
                       "`pool adaptive 7x7`", c[0])
    elif mode != "global":
        raise tf.error(f"`pool {mode}` needs a kernel size, e.g. `pool {mode} 2`", c[0])
    return _with_opts(args, c[2:])


def _pool_text(o, show):
    parts = ["pool", o.arg("mode").id]
    if o.arg("kernel") is not None:
        parts.append(show(o.arg("kernel"), atom=True, after_atom=True))
    text = _show_opts(o, show, parts)
    return text + " ceil" if o.arg("ceil") is not None else text


def _pool_resolve(r, shape):
    mode = r.op.arg("mode").id
    if mode == "global":
        return "gpool", (shape[0],), {}
    if mode == "adaptive":  # average pooling to the size written, whatever the input's
        if r.has("stride") or r.has("padding") or r.has("ceil"):
            raise r.err("`pool adaptive HxW` takes its output size only: no stride or padding")
        size = r.pair("kernel", "pool output size", 1, r.limit("size"))
        return "apool", (shape[0],) + size, dict(kernel=size)
    kern = r.pair("kernel", "pool size", 1, r.limit("size"))
    stride = r.opt_pair("stride", kern, 1)
    padding = r.opt_pair("padding", (0, 0), 0)
    if padding[0] * 2 > kern[0] or padding[1] * 2 > kern[1]:
        raise r.err("pool padding must be at most half the pool size")
    hw = r.spatial(shape, kern, stride, padding, "pooling")
    if r.has("ceil"):
        hw = tuple(_ceil_size(*a) for a in zip(shape[1:], kern, stride, padding))
    return f"{mode}pool", (shape[0],) + hw, dict(kernel=kern, stride=stride, padding=padding,
                                                 ceil=r.has("ceil"))


def _pad_resolve(r, shape):
    width = r.whole("width", "pad width", 1, r.limit("channels"))
    if width < shape[0]:
        raise r.err(f"pad {width} is below the input's {shape[0]} channels",
                    "pad appends zero channels up to the width written")
    return "pad", (width,) + tuple(shape[1:]), {}


def _cbam_reference(op, get, x, training):
    def mlp(v):
        return F.linear(torch.relu(F.linear(v, get("fc1", "weight"), get("fc1", "bias"))),
                        get("fc2", "weight"), get("fc2", "bias"))
    x = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    s = batch_norm(lambda leaf: get("bn", leaf), F.conv2d(maps, get("conv", "weight"),
                                                          None, 1, 3), training)
    return x * torch.sigmoid(s)


def _ceil_size(n, k, s, p):
    """A pool's output size with ceil_mode, by PyTorch's rule: the windows' count rounded up,
    less one if the last window would start past the input and its left padding."""
    steps = -(-(n + 2 * p - k) // s)
    return steps + 1 - (steps * s >= n + p)


def _pool_label(op):
    k = "x".join(map(str, op.kernel))
    stride = f"/{op.stride[0]}" if op.stride[0] > 1 and op.stride != op.kernel else ""
    return f"{op.kind[:3]} pool {k}{stride}" + (" ceil" if op.ceil else "")


# --- branches and shuffle ---------------------------------------------------------------------

def _branches_parse(c, tf):
    args = {"paths": tuple(c[1:])}
    if c[0] is not None:
        args["split"] = ast.Bool(True)
    return args


def _branches_text(o, show):
    """The one-line form (fmt prints a branches op as a block of paths instead)."""
    from .fmt import op_text
    paths = " ".join("path { " + "; ".join(op_text(x) for x in p.ops) + " }" if p.ops
                     else "path {}" for p in o.arg("paths"))
    return ("branches split { " if o.arg("split") is not None else "branches { ") + paths + " }"


def _branches_resolve(r, shape):
    paths, split = r.op.arg("paths"), r.has("split")
    n = len(paths)
    if split and shape[0] % n:
        raise r.err(f"branches split shares {shape[0]} channels among {n} paths unevenly",
                    "the input's width must be a multiple of the number of paths")
    part = (shape[0] // n,) + tuple(shape[1:]) if split else tuple(shape)
    resolved, outs = [], []
    for k, path in enumerate(paths):
        ops = r.ops(path.ops, part, f"path {k + 1}")
        resolved.append(ops)
        outs.append(ops[-1].out_shape if ops else part)
    if len({o[1:] for o in outs}) > 1 or any(len(o) != 3 for o in outs):
        raise r.err("the paths of branches end at different sizes: " +
                    ", ".join("x".join(map(str, o)) for o in outs),
                    "their outputs are concatenated along the channels: same height and width")
    out = (sum(o[0] for o in outs),) + outs[0][1:]
    return "branches", out, dict(paths=tuple(resolved), split=split)


def _branches_reference(op, get, x, training):
    outs = []
    for k, path in enumerate(op.paths):
        y = units.path_input(x, k, len(op.paths), op.split)
        for j, o in enumerate(path):
            y = KINDS[o.kind].reference(
                o, lambda *leaf, name=names.branch_op(k, o.kind, j): get(name, *leaf), y,
                training)
        outs.append(y)
    return torch.cat(outs, 1)


def _shuffle_resolve(r, shape):
    g = r.whole("groups", "shuffle groups", 1, r.limit("channels"))
    if shape[0] % g:
        raise r.err(f"shuffle {g} needs a width divisible by {g}, got {shape[0]}")
    return "shuffle", shape, dict(groups=g)


_POOL = Syntax("pool", "pool", parse=_pool_parse, text=_pool_text, resolve=_pool_resolve,
               on="map")


# --- the rest ---------------------------------------------------------------------------------

def _bn_reference(op, get, x, training):
    return batch_norm(get, x, training, op.eps)


def batch_norm(get, x, training, eps=1e-5):
    """BatchNorm of x in its training or eval form, its tensors read with get(leaf)."""
    return F.batch_norm(x, get("running_mean").clone(), get("running_var").clone(),
                        get("weight"), get("bias"), training, 0.0, eps)


def _bn_text(o, show):
    return " ".join(["bn"] + [f"{name} {show(o.arg(name))}" for name in ("eps", "momentum")
                              if o.arg(name) is not None])


def _bn_resolve(r, shape):
    fields = {}
    if r.has("eps"):
        fields["eps"] = r.prob("eps", "bn eps")
        if fields["eps"] == 0:
            raise r.err("bn eps must be above 0: it keeps the division by the variance finite")
    if r.has("momentum"):
        fields["momentum"] = r.prob("momentum", "bn momentum")
    return "bn", shape, fields


def _bn_module(op):
    return (nn.BatchNorm2d if len(op.in_shape) == 3 else nn.BatchNorm1d)(
        op.in_shape[0], eps=op.eps, momentum=op.momentum)


SE_ACTS = ("relu", "relu6", "silu", "hardswish")
SE_GATES = ("sigmoid", "hardsigmoid")


def _se_text(o, show):
    size = "hidden" if o.arg("hidden") is not None else "reduction"
    parts = ["se", size, show(o.arg(size))]
    for name in ("act", "gate"):
        if o.arg(name) is not None:
            parts += [name, o.arg(name).id]
    return " ".join(parts)


def _se_resolve(r, shape):
    """se reduction R (hidden C // R, at least 1) or se hidden H; act and gate words."""
    if r.has("hidden"):
        hidden = r.whole("hidden", "se hidden width", 1, r.limit("channels"))
    else:
        hidden = max(1, shape[0] // r.whole("reduction", "se reduction", 1))
    fields = dict(hidden=hidden)
    if r.has("act"):
        fields["act"] = r.word("act", SE_ACTS, "se act")
    if r.has("gate"):
        fields["gate"] = r.word("gate", SE_GATES, "se gate")
    return "se", shape, fields


def _se_parse(c, tf):
    """The grammar gives the size first (reduction or hidden), then act and gate words."""
    args = {c[0][0]: c[0][1]}
    for name, word in c[1:]:
        if name in args:
            raise tf.error(f"se has `{name}` twice", word)
        args[name] = tf.token_name(word)
    return args


def _droppath_parse(c, tf):
    args = {"p": c[0]}
    if c[1] is not None:
        args["linear"] = ast.Bool(True)
    return args


def _droppath_text(o, show):
    return f"droppath {show(o.arg('p'))}" + (" linear" if o.arg("linear") is not None else "")


def _droppath_resolve(r, shape):
    return "droppath", shape, dict(p=r.prob("p", "droppath"), linear=r.has("linear"))


def _se_reference(op, get, x, training):
    s = F.linear(x.mean((2, 3)), get("fc1", "weight"), get("fc1", "bias"))
    s = units.ACTIVATIONS[op.act](s)
    s = units.ACTIVATIONS[op.gate](F.linear(s, get("fc2", "weight"), get("fc2", "bias")))
    return x * s[:, :, None, None]


def _cbam_resolve(r, shape):
    """cbam: the hidden width is C // reduction, at least 1."""
    return "cbam", shape, dict(hidden=max(1, shape[0] // r.whole("reduction", "cbam reduction",
                                                                  1)))


def _fc_resolve(r, shape):
    return "fc", (r.whole("out", "fc width", 1, r.limit("channels") * 16),), {}


def _dropout_resolve(r, shape):
    return "dropout", shape, dict(p=r.prob("p"))


def _one(word, name):
    """The syntax of an op written `word EXPR`, the expression being its arg `name`."""
    return dict(parse=lambda c, tf: {name: c[0]},
                text=lambda o, show: f"{word} {show(o.arg(name))}")


def _activation(name, label, module, fn, saves):
    """An elementwise activation written as its name alone: module() makes its nn.Module,
    fn(x) is its reference."""
    return Kind(name, Syntax(name, name, **_word(name)), lambda op: module(),
                lambda op, get, x, training: fn(x), lambda op: label, prefix=True, saves=saves)


_TABLE = (
    Kind("conv", _CONV,
         lambda op: nn.Conv2d(op.in_shape[0], op.out_shape[0], op.kernel, op.stride, op.padding,
                              groups=op.groups, bias=op.bias),
         lambda op, get, x, training: F.conv2d(x, get("weight"),
                                               get("bias") if op.bias else None, op.stride,
                                               op.padding, 1, op.groups),
         lambda op: (f"conv {'x'.join(map(str, op.kernel))}"
                     f"{f'/{op.stride[0]}' if op.stride[0] > 1 else ''} → {op.out_shape[0]}"),
         node=Conv, params=_conv_params, largest=_conv_weight, saves="input"),
    Kind("bn", Syntax("bn", "bn", parse=lambda c, tf: _with_opts({}, c), text=_bn_text,
                      resolve=_bn_resolve),
         _bn_module, _bn_reference, lambda op: "BN", node=BN,
         params=lambda op: 2 * op.in_shape[0],
         largest=lambda op: op.in_shape[0], prefix=True, saves="input",
         stats=lambda op: op.in_shape[0]),
    _activation("relu", "ReLU", lambda: nn.ReLU(), lambda x: torch.relu(x), saves="output"),
    Kind("dropout", Syntax("dropout", "drop", resolve=_dropout_resolve, **_one("dropout", "p")),
         lambda op: units.Dropout(op.p),
         lambda op, get, x, training: units.dropout(x, op.p, training),
         lambda op: f"dropout {op.p:g}", node=Dropout, kept=1, draws=True),
    Kind("maxpool", _POOL,
         lambda op: nn.MaxPool2d(op.kernel, op.stride, op.padding, ceil_mode=op.ceil),
         lambda op, get, x, training: F.max_pool2d(x, op.kernel, op.stride, op.padding,
                                                   ceil_mode=op.ceil),
         _pool_label, node=Pool, saves="input", kept=8),
    Kind("avgpool", _POOL,
         lambda op: nn.AvgPool2d(op.kernel, op.stride, op.padding, ceil_mode=op.ceil),
         lambda op, get, x, training: F.avg_pool2d(x, op.kernel, op.stride, op.padding,
                                                   ceil_mode=op.ceil),
         _pool_label, node=Pool),
    Kind("gpool", _POOL, lambda op: units.GlobalAvgPool(),
         lambda op, get, x, training: x.mean((2, 3)), lambda op: "global avg pool"),
    Kind("se", Syntax("se", "se", parse=_se_parse, text=_se_text, resolve=_se_resolve,
                      on="map"),
         lambda op: units.SqueezeExcite(op.in_shape[0], op.hidden, op.act, op.gate),
         _se_reference,
         lambda op: f"SE {op.in_shape[0]}→{op.hidden}→{op.in_shape[0]}", node=SE,
         params=lambda op: 2 * op.in_shape[0] * op.hidden + op.hidden + op.in_shape[0],
         largest=lambda op: op.in_shape[0] * op.hidden, saves="input", scratch=True),
    Kind("apool", _POOL, lambda op: nn.AdaptiveAvgPool2d(op.kernel),
         lambda op, get, x, training: F.adaptive_avg_pool2d(x, op.kernel),
         lambda op: f"adaptive avg pool → {'x'.join(map(str, op.kernel))}", node=Pool),
    Kind("flatten", Syntax("flatten", "flatten", parse=lambda c, tf: {},
                           text=lambda o, show: "flatten",
                           resolve=lambda r, shape: ("flatten", (shape[0] * shape[1] *
                                                                 shape[2],), {}), on="map"),
         lambda op: nn.Flatten(1), lambda op, get, x, training: x.flatten(1),
         lambda op: "flatten"),
    Kind("pad", Syntax("pad", "pad", resolve=_pad_resolve, on="map", **_one("pad", "width")),
         lambda op: units.ZeroPadChannels(op.out_shape[0]),
         lambda op, get, x, training: F.pad(x, (0, 0, 0, 0, 0, op.out_shape[0] - x.shape[1])),
         lambda op: f"zero pad → {op.out_shape[0]}"),
    Kind("cbam", Syntax("cbam", "cbam", resolve=_cbam_resolve, on="map",
                        **_one("cbam reduction", "reduction")),
         lambda op: units.CBAM(op.in_shape[0], op.hidden), _cbam_reference,
         lambda op: f"CBAM {op.in_shape[0]}→{op.hidden}→{op.in_shape[0]}", node=SE,
         params=lambda op: (2 * op.in_shape[0] * op.hidden + op.hidden + op.in_shape[0]
                            + 2 * 7 * 7 + 2),  # the MLP; the spatial gate's conv and BN
         largest=lambda op: op.in_shape[0] * op.hidden, saves="input", scratch=True,
         kept=4, stats=lambda op: 1),  # kept: the channel-gated map (fp32), which the spatial
                                       # gate's max, mean and product keep for backward
    Kind("fc", Syntax("fc", "fc", resolve=_fc_resolve, on="vector", **_one("fc", "out")),
         lambda op: nn.Linear(op.in_shape[0], op.out_shape[0]),
         lambda op, get, x, training: F.linear(x, get("weight"), get("bias")),
         lambda op: f"FC → {op.out_shape[0]}",
         params=lambda op: op.out_shape[0] * op.in_shape[0] + op.out_shape[0],
         largest=lambda op: op.out_shape[0] * op.in_shape[0], saves="input"),
    Kind("branches", Syntax("branches", "branches", parse=_branches_parse,
                            text=_branches_text, resolve=_branches_resolve, on="map"),
         lambda op: units.Branches(op), _branches_reference,
         lambda op: f"{len(op.paths)} paths" + (" (split)" if op.split else ""),
         node=Branches, params=lambda op: sum(o.params() for o in op.leaves()),
         largest=lambda op: max([KINDS[o.kind].largest(o) for o in op.leaves()], default=0),
         saves="input", scratch=True,
         stats=lambda op: sum(KINDS[o.kind].stats(o) for o in op.leaves())),
    Kind("shuffle", Syntax("shuffle", "shuffle", resolve=_shuffle_resolve, on="map",
                           **_one("shuffle", "groups")),
         lambda op: units.ChannelShuffle(op.groups),
         lambda op, get, x, training: units.channel_shuffle(x, op.groups),
         lambda op: f"shuffle {op.groups}", node=Shuffle),
    Kind("droppath", Syntax("droppath", "droppath", parse=_droppath_parse, text=_droppath_text,
                            resolve=_droppath_resolve),
         lambda op: units.DropPath(op.p),
         lambda op, get, x, training: units.drop_path(x, op.p, training),
         lambda op: f"drop path {op.p:g}" + (" (linear)" if op.linear else ""), node=DropPath,
         scratch=True, draws=False),
    _activation("relu6", "ReLU6", lambda: nn.ReLU6(), lambda x: F.relu6(x), saves="input"),
    _activation("silu", "SiLU", lambda: nn.SiLU(), lambda x: F.silu(x), saves="input"),
    _activation("sigmoid", "sigmoid", lambda: nn.Sigmoid(), lambda x: torch.sigmoid(x),
                saves="output"),
    _activation("hardswish", "hardswish", lambda: nn.Hardswish(), lambda x: F.hardswish(x),
                saves="input"),
    _activation("hardsigmoid", "hardsigmoid", lambda: nn.Hardsigmoid(),
                lambda x: F.hardsigmoid(x), saves="input"),
)

KINDS = {k.name: k for k in _TABLE}
SYNTAX = {k.syntax.word: k.syntax for k in _TABLE}   # by the word a spec writes
