"""Elaborate: spec files + overrides -> IR (cliquegraph.ir).

Reads the spec through load.py (includes, `extends`), resolves params (defaults, `--set`
overrides, arithmetic), expands `if`, broadcasts per-block values, checks meaning and limits,
and resolves every shape from the input size. Every problem is a SpecError at the
file:line:col of the AST node.
"""

from __future__ import annotations

import dataclasses
import re

import networkx as nx

from . import ast, ir, names, ops, topology
from .attrs import ATTRS, REQUIRED
from .errors import SpecError, did_you_mean, error_at
from .load import inline, lineage, load
from .parse import parse_value
from .values import (MAX_ITEMS, SYMBOLS, Dims, Edges, Evaluator, Generator, Policy, Sym,
                     UnknownName, as_text, is_reserved, kind, show, size)

LIMITS = {"layers": 1000, "channels": 65536, "stages": 16, "blocks": 64, "size": 16384,
          "kernel": 31, "params": 2_000_000_000}
_STAGE = re.compile(r"stage(\d+)$")


# ---- params -----------------------------------------------------------------------------------

class _Params:
    """Lazy param resolution: each name evaluated once, cycles reported."""

    def __init__(self, decls, overrides):
        self.decls = decls          # name -> (expr, spec) ; the newest declaration wins
        self.overrides = overrides  # name -> (expr or value, where)
        self.values, self.active = {}, []

    def names(self):
        return list(self.decls)

    def __call__(self, name):
        if name in self.values:
            return self.values[name]
        if name not in self.decls:
            raise KeyError(name)
        if name in self.active:
            expr, spec = self.decls[name]
            raise error_at(spec, expr, "param cycle: " + " -> ".join(self.active + [name]))
        self.active.append(name)
        try:
            expr, spec = self.decls[name]
            value = Evaluator(self, spec.path, spec.text, self.blame)(expr)
            if name in self.overrides:
                value = self._override(name, value)
        finally:
            self.active.pop()
        self.values[name] = value
        return value

    def _override(self, name, default):
        given, where, text = self.overrides[name]
        if text is not None:  # .clq text from --set (or a str given to build)
            try:
                value = Evaluator(self, where, text)(given)
            except UnknownName as err:
                raise _unknown_in_override(err, name, default, self.names()) from None
        else:
            value = given
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise SpecError(f"param {name}: {show(value)} is too large",
                                file=where, line=1 if text else None, column=1,
                                source_line=text) from None
        wild = (Sym("all"), Sym("none"))
        if kind(value) != kind(default) and value not in wild and default not in wild:
            raise SpecError(f"param {name} is a {kind(default)} (default {show(default)}), "
                            f"got {show(value)}", file=where, line=1 if text else None,
                            column=1, source_line=text)
        return value

    def blame(self, node) -> str | None:
        """Which overrides an error at `node` comes from, through the params it reads: an
        error in the spec that only a --set value caused must say so."""
        if not self.overrides or isinstance(node, (ast.Network, ast.Blocks, ast.Section,
                                                   ast.If, ast.Include)):
            return None
        found, seen, todo = [], set(), list(_names_in(node))
        while todo:
            name = todo.pop()
            if name in seen or name not in self.decls:
                continue
            seen.add(name)
            if name in self.overrides:
                found.append(name)
                given, _, text = self.overrides[name]
                todo.extend(_names_in(given) if text is not None else ())
            else:
                todo.extend(_names_in(self.decls[name][0]))
        notes = []
        for name in sorted(found):
            given, _, text = self.overrides[name]
            value = show(self.values[name]) if name in self.values else text or show(given)
            notes.append(f"{name} = {value} comes from --set {name}={text or show(given)}")
        return "; ".join(notes) or None


def _names_in(node) -> set:
    """The names an AST node reads. A loop, not recursion: `1 + 1 + ... + 1` nests as deep as
    it is long."""
    out, todo = set(), [node]
    while todo:
        x = todo.pop()
        if isinstance(x, ast.Name):
            out.add(x.id)
        elif isinstance(x, tuple):
            todo.extend(x)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            todo.extend(getattr(x, f.name) for f in dataclasses.fields(x) if f.name != "pos")
    return out


def _unknown_in_override(err, name, default, params) -> SpecError:
    """`--set k=abc` is more often a mistyped value than a mistyped param: say what k takes."""
    wild = default in (Sym("all"), Sym("none"))
    what = "a symbol or a number" if wild else f"a {kind(default)}"
    words = list(params)
    if kind(default) == "bool":
        words += ["true", "false"]
        how = "write true or false"
    elif kind(default) == "symbol":
        words += sorted(SYMBOLS) + ["stage1", "stage2", "stage3"]
        how = f"a symbol is written bare, as in the spec: --set {name}={show(default)}"
    elif kind(default) == "number":
        how = f"write a number, e.g. --set {name}={show(default)}"
    else:
        how = f'write it as in the spec, e.g. --set "{name}={show(default)}"'
    close = did_you_mean(err.name, words)
    hint = f"{close} ({how})" if close else how
    return SpecError(f"{err.message}: param {name} is {what} (default {show(default)})",
                     file=err.file, line=err.line, column=err.column,
                     source_line=err.source_line, hint=hint)


def _convert_override(name, value):
    """A Python value given to build(**params), or text from --set: (value or expr, where, text)."""
    where = f"--set {name}"
    if isinstance(value, str):
        return parse_value(value, where), where, value
    return _python_value(value, name, where), where, None


def _python_value(value, name, where):
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:  # before walking it
            raise SpecError(f"a list of more than {MAX_ITEMS:,} values is past the limit",
                            file=where)
        items = tuple(_python_value(x, name, where) for x in value)
        if size(items) > MAX_ITEMS:
            raise SpecError(f"a list of more than {MAX_ITEMS:,} values is past the limit",
                            file=where)
        return items
    raise SpecError(f"cannot use {type(value).__name__} as a value for {name}", file=where)


# ---- elaboration ------------------------------------------------------------------------------

def elaborate(path, overrides=None, text=None, includes=True) -> ir.Network:
    """The IR of the main network of spec file `path`, with params overridden.

    `overrides` maps a param name to .clq text (as --set takes it) or a Python value; `text`,
    when given, is the spec's content (then `path` only names it in messages). With
    `includes=False` an `include` is an error and nothing but `text` is read: rebuilding from
    a checkpoint (whose spec text is self-contained, see standalone) must not read local files
    a crafted checkpoint names."""
    networks, main = load(path, text, includes)
    chain = lineage(networks, main)
    decls: dict = {}
    for net, spec in chain:
        seen = {}
        for stmt in net.body:
            _no_nested_params(stmt, spec)
            if isinstance(stmt, ast.Param):
                if stmt.name in seen:
                    raise error_at(spec, stmt, f"param {stmt.name} is declared twice in "
                                   f"{net.name} (first on line {seen[stmt.name].pos.line})")
                if is_reserved(stmt.name):
                    raise error_at(spec, stmt,
                                   f"{stmt.name!r} is a reserved word, not a param name")
                seen[stmt.name] = stmt
                decls[stmt.name] = (stmt.value, spec)
    conv = {}
    for name, value in (overrides or {}).items():
        if name not in decls:
            raise SpecError(f"no param {name!r} in network {main.name}", file=f"--set {name}",
                            hint=did_you_mean(name, decls) or
                            "params: " + ", ".join(decls) if decls else "it declares no params")
        conv[name] = _convert_override(name, value)
    params = _Params(decls, conv)
    for name in decls:  # resolve all, so every override is type-checked
        params(name)
    net = _Builder(main, chain, params).build()
    # the text and overrides it was built from, includes inlined: a checkpoint keeps them and
    # never re-reads a file that may have changed since
    return dataclasses.replace(net, text=inline(chain), overrides=tuple(
        (name, as_text(value)) for name, value in (overrides or {}).items()))


def _no_nested_params(stmt, spec, inside=False):
    if isinstance(stmt, ast.Param) and inside:
        raise error_at(spec, stmt, "a param cannot be declared inside `if`",
                       hint="declare it at the top of the network and make its value conditional: "
                       "param x = if c then a else b")
    if isinstance(stmt, ast.If):
        for s in stmt.then + stmt.else_:
            _no_nested_params(s, spec, True)


class _OpRules:
    """What an op's rule in the op table (ops.Syntax.resolve) may ask of the elaborator: its
    operands evaluated (C is the width entering the op) and checked, and errors at its place."""

    def __init__(self, builder, op, sp, shape, where):
        self.b, self.op, self.sp, self.shape, self.where = builder, op, sp, shape, where

    def _arg(self, name):
        node = self.op.arg(name)
        return self.b.ev(node, self.sp, {**self.b.scope, "C": self.shape[0]}), node

    def has(self, name):
        return self.op.arg(name) is not None

    def limit(self, name):
        return LIMITS[name]

    def whole(self, name, what, lo, hi=None):
        v, node = self._arg(name)
        return self.b.whole(v, self.sp, node, what, lo, hi)

    def pair(self, name, what, lo, hi):
        v, node = self._arg(name)
        return self.b.pair(v, self.sp, node, what, lo, hi)

    def opt_pair(self, name, default, lo):
        return self.pair(name, name, lo, LIMITS["size"]) if self.has(name) else default

    def prob(self, name, what="dropout"):
        v, node = self._arg(name)
        return self.b.prob(v, self.sp, node, what)

    def ops(self, body, shape, what):
        """Ops written inside this op (a path of branches), resolved from `shape`."""
        return self.b.ops(self.sp, body, shape, f"{self.where}, {what}")[0]

    def word(self, name, allowed, what):
        """An operand written as one of the words `allowed` (`act silu`)."""
        node = self.op.arg(name)
        if node.id not in allowed:
            raise self.b.err(self.sp, node, f"{what} is one of {', '.join(allowed)}, got "
                             f"{node.id!r}", did_you_mean(node.id, allowed))
        return node.id

    def spatial(self, shape, kern, stride, padding, what):
        return self.b.spatial(shape, kern, stride, padding, self.sp, self.op, self.where, what)

    def err(self, msg, hint=None):
        return self.b.err(self.sp, self.op, msg, hint)


class _AttrRules:
    """What a block attribute's rule (attrs.Attr.resolve) may ask of the elaborator: checks of
    its value, and errors at its place (the `blocks` statement for a default)."""

    def __init__(self, builder, sp, node, block, blocks, shape, written):
        # node: the ast.Attr, or the `blocks` statement for a default; errors point at the
        # attribute's value
        self.b, self.sp, self.node = builder, sp, node
        self.where = getattr(node, "value", None) or node
        self.block, self.blocks, self.shape, self._written = block, blocks, shape, written

    def written(self, name) -> bool:
        """Whether the spec gives attribute `name` (a default is not written)."""
        return name in self._written

    def ops(self, body, shape, *, K, S, what):
        """The ops written in an attribute's braces, resolved from `shape` with K (the
        block's width) and S (the update's stride) as names."""
        scope = self.b.scope
        self.b.scope = {**scope, "K": K, "S": S}
        try:
            return self.b.ops(self.sp, body, shape, what)[0]
        finally:
            self.b.scope = scope

    def limit(self, name):
        return LIMITS[name]

    def whole(self, v, what, lo, hi=None):
        return self.b.whole(v, self.sp, self.where, what, lo, hi)

    def pair(self, v, what, lo, hi):
        return self.b.pair(v, self.sp, self.where, what, lo, hi)

    def prob(self, v):
        return self.b.prob(v, self.sp, self.where)

    def policy(self, what, v, stages):
        return self.b.policy(what, (v, self.sp, self.node), stages)

    def topology(self, v, got):
        return self.b.topology(v, self.sp, self.node, self.block, self.shape[0], got)

    def err(self, msg, hint=None):
        return self.b.err(self.sp, self.where, msg, hint)


class _Builder:
    def __init__(self, main, lineage, params):
        self.main, self.lineage, self.params = main, lineage, params
        self.n_edges = 0  # W_ij of the blocks built so far: the limit is for the whole network
        # the names a block's attributes and ops may read beyond the params: B (the block's
        # number; in a transition, the block before it), and in a unit K and S
        self.scope = {}

    # evaluation helpers -------------------------------------------------------------------
    def ev(self, expr, spec, extra=None):
        lookup = self.params
        extra = {**self.scope, **(extra or {})}
        if extra:
            def lookup(name, _extra=extra):
                return _extra[name] if name in _extra else self.params(name)
            lookup.names = lambda: list(extra) + self.params.names()
        return Evaluator(lookup, spec.path, spec.text, self.params.blame)(expr)

    def err(self, spec, node, msg, hint=None):
        note = self.params.blame(node)
        return error_at(spec, node, f"{msg} ({note})" if note else msg, hint)

    def whole(self, v, spec, node, what, lo=1, hi=None):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            hint = "use // for whole-number division" if isinstance(v, float) else None
            raise self.err(spec, node, f"{what} must be a whole number, got {show(v)}", hint)
        if v < lo:
            raise self.err(spec, node, f"{what} must be at least {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.err(spec, node, f"{what} {v} is past the limit of {hi}")
        return v

    def pair(self, v, spec, node, what, lo=1, hi=None):
        if isinstance(v, Dims):
            if len(v.values) != 2:
                raise self.err(spec, node, f"{what} must be N or NxM, got {v}")
            return tuple(self.whole(x, spec, node, what, lo, hi) for x in v.values)
        x = self.whole(v, spec, node, what, lo, hi)
        return (x, x)

    # statements ---------------------------------------------------------------------------
    def _expand(self, stmts, spec):
        """Statements with `if`s resolved, each paired with its file."""
        for s in stmts:
            if isinstance(s, ast.If):
                cond = self.ev(s.cond, spec)
                if not isinstance(cond, bool):
                    raise self.err(spec, s.cond, f"`if` needs true or false, got {show(cond)}")
                yield from self._expand(s.then if cond else s.else_, spec)
            else:
                yield s, spec

    def build(self) -> ir.Network:
        inp = stem = trans = head = None
        count, attrs, blocks_stmt = None, [], None
        for net, spec in self.lineage:
            for s, sp in self._expand(net.body, spec):
                if isinstance(s, ast.Input):
                    inp = (s, sp)
                elif isinstance(s, ast.Section):
                    if s.kind == "stem":
                        stem = (s, sp)
                    elif s.kind == "transition":
                        trans = (s, sp)
                    else:
                        head = (s, sp)
                elif isinstance(s, ast.Blocks):
                    blocks_stmt = (s, sp)
                    if s.count is not None:
                        count = (s.count, sp)
                    attrs.extend(self._expand(s.attrs, sp))
        main_spec = self.lineage[-1][1]
        if inp is None:
            raise self.err(main_spec, self.main, f"network {self.main.name} has no `input`",
                           "add e.g. `input 3x32x32`")
        if blocks_stmt is None:
            raise self.err(main_spec, self.main, f"network {self.main.name} has no `blocks`")
        if head is None:
            raise self.err(main_spec, self.main, f"network {self.main.name} has no `head`")

        shape = self.input_shape(*inp)
        stem_ops, shape = self.ops(stem[1] if stem else None, stem[0].ops if stem else (),
                                   shape, "stem")
        n_blocks = self.block_count(count, attrs, blocks_stmt)
        blocks, transitions = [], []
        for b in range(1, n_blocks + 1):
            self.scope = {"B": b}
            block = self.block(b, n_blocks, attrs, shape, blocks_stmt)
            blocks.append(block)
            if b < n_blocks:
                if trans is None:
                    raise self.err(blocks_stmt[1], blocks_stmt[0],
                                   "several blocks need a `transition { ... }` between them")
                t_in = (block.transit_channels,) + block.hw
                ops, shape = self.ops(trans[1], trans[0].ops, t_in, f"transition {b}")
                transitions.append(ops)
        self.scope = {}
        blocks = _stochastic_depth(blocks)
        scales, head_scale, head_ops = self.head(*head, blocks)
        net = ir.Network(
            name=self.main.name, path=self.lineage[-1][1].path, text=self.lineage[-1][1].text,
            params=tuple((name, self.params(name)) for name in self.params.names()),
            input_shape=self.input_shape(*inp), stem=stem_ops, blocks=tuple(blocks),
            transitions=tuple(transitions), scales=scales, head_scale=head_scale,
            head=head_ops, graph=None)
        net = dataclasses.replace(net, graph=_network_graph(net))
        total = count_params(net)
        if total > LIMITS["params"]:
            raise self.err(blocks_stmt[1], blocks_stmt[0],
                           f"{total:,} parameters is past the limit of {LIMITS['params']:,}")
        return net

    def input_shape(self, stmt, spec):
        v = self.ev(stmt.value, spec)
        vals = v.values if isinstance(v, Dims) else v if isinstance(v, tuple) else None
        if vals is None or len(vals) != 3:
            raise self.err(spec, stmt.value, f"input must be CxHxW, e.g. 3x32x32; got {show(v)}")
        c = self.whole(vals[0], spec, stmt.value, "input channels", 1, LIMITS["channels"])
        h = self.whole(vals[1], spec, stmt.value, "input height", 1, LIMITS["size"])
        w = self.whole(vals[2], spec, stmt.value, "input width", 1, LIMITS["size"])
        return (c, h, w)

    def block_count(self, count, attrs, blocks_stmt):
        if count is not None:
            return self.whole(self.ev(*count), count[1], count[0], "block count", 1,
                              LIMITS["blocks"])
        lengths = {len(v) for a, sp in attrs if a.ops is None
                   for v in [self.ev(a.value, sp, {"B": 1})] if isinstance(v, tuple)}
        if len(lengths) == 1:
            return self.whole(lengths.pop(), blocks_stmt[1], blocks_stmt[0], "block count", 1,
                              LIMITS["blocks"])
        raise self.err(blocks_stmt[1], blocks_stmt[0], "how many blocks? write `blocks N { ... }`")

    # one block ----------------------------------------------------------------------------
    def block(self, b, n_blocks, attrs, shape, blocks_stmt) -> ir.Block:
        vals = {}
        for a, sp in attrs:  # later wins
            if a.ops is not None:  # resolved by its rule, with the block's names
                vals[a.name] = (a.ops, sp, a)
                continue
            v = self.ev(a.value, sp)
            if isinstance(v, tuple):
                if len(v) != n_blocks:
                    raise self.err(sp, a.value, f"{a.name} lists {len(v)} values for "
                                   f"{n_blocks} blocks", "give one value per block, or one "
                                   "value for all")
                v = v[b - 1]
            vals[a.name] = (v, sp, a)
        blocks_node, spec_of_blocks = blocks_stmt
        if shape[0] > LIMITS["channels"]:
            raise self.err(spec_of_blocks, blocks_node, f"block {b} input has {shape[0]} "
                           f"channels, past the limit of {LIMITS['channels']}")
        fields = {}
        for attr in ATTRS.values():
            if attr.name not in vals and attr.default is REQUIRED:
                raise self.err(spec_of_blocks, blocks_node, f"blocks need `{attr.name}`")
            v, sp, node = vals.get(attr.name, (attr.default, spec_of_blocks, blocks_node))
            rules = _AttrRules(self, sp, node, b, n_blocks, tuple(shape), set(vals))
            fields.update(attr.resolve(rules, v, fields))
        return ir.Block(index=b, in_shape=tuple(shape), **fields)

    def topology(self, v, sp, node, b, c0, got):
        """The block graph (and the topology's name) of block b from its attributes."""
        n, where = got["layers"], getattr(node, "value", node)
        edges, topo_name = self.edges(v, sp, node, n)
        self.n_edges += len(edges)
        if self.n_edges > topology.MAX_EDGES:
            raise self.err(sp, where, f"with block {b} the network has {self.n_edges:,} W_ij, "
                           f"past the limit of {topology.MAX_EDGES:,}")
        first, first0 = got["unit"].first, got["unit0"].first
        if (first is None) != (first0 is None):
            raise self.err(sp, where, f"block {b}'s unit starts with a conv for some updates "
                           "and with branches for others", "start it the same way whatever "
                           "S and C are")
        if first is None:  # a unit without a first conv: no W_ij
            graph = topology.block_graph(edges, n, c0, got["width"], None, 0)
        else:
            graph = topology.block_graph(edges, n, c0, got["width"], first.kernel,
                                         first.out_shape[0], first0.groups, first.groups,
                                         first0.out_shape[0])
        grouped = (1, 1) if first is None else (first0.groups, first.groups)
        for i in range(1, n + 1):
            ins = topology.stage1_inputs(graph, i)
            loop = topology.loop_inputs(graph, i, n) if got["stages"] > 1 else []
            if first is None and max(len(ins), len(loop)) > 1:
                raise self.err(sp, where, f"block {b}'s unit starts with branches, not a conv, "
                               f"and X_{i} reads several inputs", "the unit's first conv holds "
                               "the W_ij, one per input: start the unit with a conv, or use a "
                               "topology where each layer reads one input (chain)")
            if 0 in ins and loop and [(op.kind, op.params()) for op in got["unit0"].body] != \
                    [(op.kind, op.params()) for op in got["unit"].body]:
                raise self.err(sp, where,
                               f"block {b}'s unit after its first conv depends on its input, "
                               f"and X_{i} reads X_0 in Stage I but not in the later stages",
                               "every update of a layer runs the same ops after the first conv "
                               "(their weights are the layer's): make them independent of C")
            if 0 in ins and len(ins) > 1 and first is not None and \
                    first0.out_shape[0] != first.out_shape[0]:
                raise self.err(sp, where, f"block {b}'s unit's first conv makes "
                               f"{first0.out_shape[0]} channels of X_0 and "
                               f"{first.out_shape[0]} of a layer, and X_{i} reads both",
                               "the W_ij of an update are one conv: make its width "
                               "independent of C (e.g. a multiple of K)")
            if grouped != (1, 1) and max(len(ins), len(loop)) > 1:
                raise self.err(sp, where, f"block {b}'s unit has a grouped first conv, and "
                               f"X_{i} reads several inputs", "the first conv holds the W_ij, "
                               "one per input, concatenated along its input channels: group a "
                               "later conv, or use a topology where each layer reads one input")
            if not ins:
                raise self.err(sp, where, f"in block {b}, layer X_{i} has no input in Stage I",
                               f"give it an edge from X_0..X_{i - 1}, e.g. {i - 1} -> {i}")
            if got["stride"] > 1 and 0 in ins and len(ins) > 1:
                raise self.err(sp, where, f"block {b} has stride {got['stride']}, and X_{i} "
                               "reads X_0 with other layers, which are smaller",
                               "in a strided block only layers that read X_0 alone may read "
                               "it: stride a block of its own (e.g. `layers 1`) before this "
                               "one, or downsample in the transition")
        return {"graph": graph, "topology": topo_name}

    def prob(self, v, sp, node, what="dropout"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise self.err(sp, node, f"{what} is a probability in [0, 1), got {show(v)}")
        return float(v)

    def policy(self, what, got, stages):
        v, sp, node = got
        node = getattr(node, "value", node)
        if v == Sym("none"):
            return ()
        if not isinstance(v, Policy):
            raise self.err(sp, node, f"{what} is made of x0, stage1..stage{stages} or last "
                           f"(joined with +), or none; got {show(v)}")
        out = []
        for part in v.parts:
            if part == "last":
                part = f"stage{stages}"
            m = _STAGE.match(part)
            if m and not 1 <= int(m.group(1)) <= stages:
                raise self.err(sp, node, f"{what} names {part}, but the block has {stages} "
                               f"stage{'s' if stages > 1 else ''}",
                               f"use stage1..stage{stages}, or last")
            if part in out:
                raise self.err(sp, node, f"{what} names {part} twice")
            out.append(part)
        return tuple(out)

    def edges(self, v, sp, node, n):
        where = getattr(node, "value", node)
        if isinstance(v, Edges):
            sp = v  # its endpoints are located in the text it was written in (a param, --set)
            edges, seen = [], set()
            for e in v.edges:
                a = self.whole(self.ev(e.src, sp), sp, e.src, "edge source", 0)
                c = self.whole(self.ev(e.dst, sp), sp, e.dst, "edge target", 0)
                for x, xn in ((a, e.src), (c, e.dst)):
                    if x > n:
                        raise self.err(sp, xn, f"there is no X_{x}: the block has X_0..X_{n}")
                pairs = [(a, c)] + ([(c, a)] if e.arrow == "<->" else [])
                for i, j in pairs:
                    if i == j:
                        raise self.err(sp, e, f"X_{i} -> X_{i} is a self-loop")
                    if j == 0:
                        raise self.err(sp, e, "nothing feeds X_0: it is the block's input")
                    if (i, j) in seen:
                        raise self.err(sp, e, f"W_{i}{j} is listed twice")
                    seen.add((i, j))
                    edges.append((i, j))
                if len(edges) > topology.MAX_EDGES:
                    raise self.err(sp, e, f"more than {topology.MAX_EDGES} edges in one block")
            return edges, "edges"
        if isinstance(v, Sym) and v.name in ("clique", "dense", "chain"):
            if topology.edge_count(v.name, n) > topology.MAX_EDGES:
                raise self.err(sp, where, f"a {v.name} of {n} layers has "
                               f"{topology.edge_count(v.name, n):,} W_ij, past the limit of "
                               f"{topology.MAX_EDGES:,}")
            return topology.named(v.name, n), v.name
        if isinstance(v, Generator):
            try:
                return topology.generated(v.kind, n, dict(v.kwargs)), str(v)
            except (ValueError, nx.NetworkXError) as exc:
                raise self.err(sp, where, str(exc)) from None
        raise self.err(sp, where, f"unknown topology {show(v)}",
                       "clique, dense, chain, edges { 0 -> 1, ... }, watts_strogatz(...), "
                       "erdos_renyi(...), barabasi_albert(...)")

    # op sequences -------------------------------------------------------------------------
    def ops(self, spec, ops, shape, where, allow_vector=False):
        out = []
        for op, sp in self._expand(ops, spec):
            if op.kind == "scales":
                raise self.err(sp, op, "`scales` belongs in the head")
            resolved = self.op(op, sp, tuple(shape), where, allow_vector)
            out.append(resolved)
            shape = resolved.out_shape
        return tuple(out), shape

    def op(self, op, sp, shape, where, allow_vector):
        syntax = ops.SYNTAX.get(op.kind)
        if syntax is None:
            raise self.err(sp, op, f"unknown op {op.kind}")
        if syntax.on == "vector" and len(shape) == 3:
            raise self.err(sp, op, f"{op.kind} needs a vector: put `pool global` or `flatten` "
                           "before it")
        if syntax.on == "map" and len(shape) != 3:
            raise self.err(sp, op, f"{op.kind} needs a feature map, but a `pool global` or "
                           "`flatten` before it already made a vector")
        kind, out, fields = syntax.resolve(_OpRules(self, op, sp, shape, where), shape)
        return ops.node(kind, shape, out, **fields)

    def spatial(self, shape, kern, stride, padding, sp, op, where, what):
        hw = []
        for size, k, s, p in zip(shape[1:], kern, stride, padding):
            o = (size + 2 * p - k) // s + 1
            if o < 1:
                raise self.err(sp, op, f"{what} in the {where} would go below 1x1: "
                               f"{shape[1]}x{shape[2]} input, size {k}, stride {s}",
                               "use a larger input, " + (
                                   "a smaller kernel or stride, or more padding"
                                   if what == "conv" else "fewer blocks or less pooling"))
            hw.append(o)
        return tuple(hw)

    # head ---------------------------------------------------------------------------------
    def head(self, stmt, spec, blocks):
        flat = list(self._expand(stmt.ops, spec))
        scales_v = None
        ops = []
        for op, sp in flat:
            if op.kind == "scales":
                scales_v = (self.ev(op.arg("value"), sp), sp, op)
            else:
                ops.append((op, sp))
        split = next((i for i, (op, _) in enumerate(ops)
                      if op.kind == "flatten" or
                      (op.kind == "pool" and op.arg("mode").id == "global")), None)
        if split is None:
            raise error_at(spec, stmt, "the head needs a `pool global` or a `flatten` (it "
                           "turns each block feature into a vector)")
        per_scale, tail = ops[:split + 1], ops[split + 1:]
        with_feature = [b.index for b in blocks if b.feature]
        v = scales_v[0] if scales_v else Sym("all")
        if v == Sym("all"):
            scales = with_feature
        elif v == Policy(("last",)) or v == Sym("last"):
            scales = [blocks[-1].index]
        elif isinstance(v, tuple):
            scales = [self.whole(x, scales_v[1], scales_v[2], "scale", 1, len(blocks)) for x in v]
            if len(set(scales)) != len(scales) or not scales:
                raise self.err(scales_v[1], scales_v[2], "scales lists a block twice or none")
        else:
            raise self.err(scales_v[1], scales_v[2], f"scales is all, last or a list of block "
                           f"numbers, got {show(v)}")
        for s in scales:
            if not blocks[s - 1].feature:
                where = scales_v or (spec, stmt)
                raise self.err(where[1], where[2] if scales_v else stmt,
                               f"block {s} has feature none but the head reads it")
        if not scales:
            raise error_at(spec, stmt, "no block sends a feature to the head")
        head_scale = []
        for s in scales:
            b = blocks[s - 1]
            shape = (b.feature_channels,) + b.hw
            seq, _ = self._ops_pairs(per_scale, shape, f"head (block {s})")
            head_scale.append(seq)
        vec = (sum(seq[-1].out_shape[0] for seq in head_scale),)
        tail_ops, _ = self._ops_pairs(tail, vec, "head")
        return tuple(scales), tuple(head_scale), tail_ops

    def _ops_pairs(self, pairs, shape, where):
        out = []
        for op, sp in pairs:
            resolved = self.op(op, sp, tuple(shape), where, True)
            out.append(resolved)
            shape = resolved.out_shape
        return tuple(out), shape


def _network_graph(net: ir.Network) -> nx.DiGraph:
    """The main path input -> stem -> block 1 -> transition 1 -> ... -> block B, each edge with
    the shape it carries, and an edge from each block whose feature the head reads."""
    g = nx.DiGraph()
    g.add_node("input", kind="input", shape=net.input_shape)
    prev, parts = "input", list(ir.parts(net))
    for p in parts:
        if p.kind == "stem":
            g.add_node(p.name, kind="stem", ops=p.ops)
            g.add_edge(prev, p.name, shape=p.in_shape)
        elif p.kind == "block":
            g.add_node(p.name, kind="block", block=p.block)
            g.add_edge(prev, p.name, shape=p.in_shape,
                       role="transit" if prev != names.STEM else "input")
        elif p.kind == "transition":
            g.add_node(p.name, kind="transition", ops=p.ops)
            g.add_edge(prev, p.name, shape=p.in_shape, role="transit", sources=p.block.transit)
        else:
            continue
        prev = p.name
    g.add_node(names.HEAD, kind="head", scales=net.scales, ops=net.head)
    for p in parts:
        if p.kind == "scale":
            g.add_edge(names.block(p.index), names.HEAD, shape=p.in_shape, role="feature",
                       sources=p.block.feature)
    return g


def count_params(net: ir.Network) -> int:
    """Trainable parameters, from the IR alone (the lowering must agree; the tests check)."""
    return sum(block_params(p.block) if p.kind == "block" else sum(op.params() for op in p.ops)
               for p in ir.parts(net))


def _stochastic_depth(blocks):
    """`droppath P linear` in units: each layer's rate, P * u / N, u counting from 0 over the
    N layers of the network whose unit has one, block by block (torchvision's EfficientNet)."""
    def linear(b):
        return any(op.kind == "droppath" and op.linear for op in b.unit.body + b.unit0.body)

    total = sum(b.layers for b in blocks if linear(b))
    out, u = [], 0
    for b in blocks:
        if linear(b):
            def fill(unit, first=u, n=b.layers):
                return dataclasses.replace(unit, body=tuple(
                    dataclasses.replace(op, rates=tuple(op.p * v / total
                                                        for v in range(first, first + n)))
                    if op.kind == "droppath" and op.linear else op for op in unit.body))
            b = dataclasses.replace(b, unit=fill(b.unit), unit0=fill(b.unit0))
            u += b.layers
        out.append(b)
    return out


def block_params(b: ir.Block) -> int:
    """Each W_ij that some update reads, once; per layer its unit's other weights (and the
    shortcut ops of its edge from X_0); a BatchNorm per (stage, update), or one per layer for
    all loop stages with `bn shared`. Edges no update reads (a clique's feedback edges with
    one stage) are not owned."""
    # The updates of schedule(b), counted without listing them: a 500-layer clique with 16
    # stages would list 4M inputs.
    g, n = b.graph, b.layers
    used, total = set(), 0

    def bns(unit, c_in):  # an update's BN parameters: the pre ops see all its inputs
        return sum(2 * (c_in if j < len(unit.pre) else op.in_shape[0])
                   for j, op in enumerate(unit.ops) if op.kind == "bn")

    for i in range(1, n + 1):
        ins = topology.stage1_inputs(g, i)
        used.update((l, i) for l in ins)
        unit = b.unit_of(ins)
        total += bns(unit, sum(g.nodes[l]["channels"] for l in ins))
        total += sum(op.params() for op in unit.body if op.kind != "bn")
        total += unit.first.out_shape[0] if unit.first is not None and unit.first.bias else 0
        if 0 in ins:
            total += sum(op.params() for op in b.shortcut)
        ins = topology.loop_inputs(g, i, n)
        updates = sum(1 for s in range(2, b.stages + 1) if i <= b.updates(s)) if ins else 0
        if updates:  # a layer with nothing to read in the loop keeps its value
            used.update((l, i) for l in ins)
            total += (1 if b.bn == "shared" else updates) * bns(b.unit, len(ins) * b.width)
    convs = sum(d["out_channels"] * d["in_channels"] * d["kernel"][0] * d["kernel"][1]
                for u, v, d in g.edges(data=True) if (u, v) in used and d["kernel"])
    return convs + total
