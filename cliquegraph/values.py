"""Values of .clq expressions and their evaluation.

Numbers, bools and lists are Python's int/float/bool/tuple; the rest are small frozen types:
Sym (clique, dense, chain, all, none, per_stage, shared, last, ...), Policy (x0 + stage2),
Dims (3x3, 3x32x32), Generator (watts_strogatz(k = 4, p = 0.25, seed = 1)) and Edges
(edges { 0 -> 1, 1 <-> 2 }).

Every value is small: a list or a policy past MAX_ITEMS values is refused before it is built
(forty lines of `param a1 = a0 + a0` would otherwise ask for 2^40 of them), and numbers past
64 bits or past the range of a float are errors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from . import ast
from .errors import SpecError, did_you_mean

SYMBOLS = {"clique", "dense", "chain", "all", "none", "last", "x0", "xn", "per_stage", "shared",
           "cat", "add", "input", "pre", "se", "cbam", "large", "small"} | {
           f"b{v}" for v in range(8)}  # the sizes of MobileNet v3 and EfficientNet
_STAGE = re.compile(r"stage([1-9][0-9]?)$")
GENERATORS = {  # networkx random-graph generators over the layers of a block, and their args
    "watts_strogatz": {"k": int, "p": float, "seed": int},
    "erdos_renyi": {"p": float, "seed": int},
    "barabasi_albert": {"m": int, "seed": int},
}
FUNCTIONS = {"floor", "ceil", "round", "min", "max", "len", "sum", "divisible"} | set(GENERATORS)
MAX_ITEMS = 4096  # values in one list, nested lists in full; a per-block list has <= 64


@dataclass(frozen=True)
class Sym:
    name: str

    def __str__(self):
        return self.name


@dataclass(frozen=True)
class Policy:
    """Which values of a block a feature/transit takes, in channel order: 'x0', 'stageN', 'last'."""
    parts: tuple

    def __str__(self):
        return " + ".join(self.parts) if self.parts else "none"


@dataclass(frozen=True)
class Dims:
    values: tuple

    def __str__(self):
        return "x".join(map(str, self.values))


@dataclass(frozen=True)
class Generator:
    kind: str
    kwargs: tuple  # sorted (name, value)

    def __str__(self):
        return f"{self.kind}(" + ", ".join(f"{k} = {v}" for k, v in self.kwargs) + ")"


@dataclass(frozen=True)
class Edges:
    """An `edges { ... }` topology. Its endpoints are evaluated by the block that takes it (only
    the block knows its layer count), so it keeps their expressions and the text they are in."""
    edges: tuple  # ast.Edge
    path: str = field(compare=False)
    text: str = field(compare=False, repr=False)

    def __str__(self):
        from .fmt import expr
        return expr(ast.EdgeList(self.edges))


def is_reserved(name: str) -> bool:
    return (name in SYMBOLS or bool(_STAGE.match(name))
            or name in ("C", "K", "S", "B", "true", "false", "edges"))


def size(v, limit=MAX_ITEMS) -> int:
    """How many values `v` holds, nested lists counted in full (an empty list as one); the
    count stops soon after `limit`, so a list that shares its items many times over costs
    no more than that to measure."""
    if isinstance(v, Policy):
        return len(v.parts)
    if not isinstance(v, tuple):
        return 1
    n = 0
    for x in v:
        n += size(x, limit - n)
        if n > limit:
            break
    return max(n, 1)


def show(v) -> str:
    """A value as .clq text (for messages and summaries)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ", ".join(show(x) for x in v) + "]"
    return str(v)


def as_text(v) -> str:
    """A param override (.clq text, or a Python value as build(**params) takes) as .clq text."""
    return v if isinstance(v, str) else show(tuple(v) if isinstance(v, list) else v)


def kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, tuple):
        return "list"
    if isinstance(v, Dims):
        return "size"
    return "symbol"  # Sym, Policy, Generator


def _type_name(v) -> str:
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, tuple):
        return "a list"
    if isinstance(v, Dims):
        return "a size"
    if isinstance(v, Policy):
        return "a feature policy"
    if isinstance(v, Generator):
        return "a graph generator"
    if isinstance(v, Edges):
        return "an edge list"
    return f"`{v}`"


class UnknownName(SpecError):
    """A name that is neither a param nor a symbol (the caller may know what was meant)."""

    def __init__(self, message, *, name, **where):
        self.name = name
        super().__init__(message, **where)


class Evaluator:
    """Evaluates expressions against a lookup function for names (params, C).

    `blame`, if given, maps the node an error is about to a note naming the overrides behind
    it ("T = 13 comes from --set T=13"): the error is in the spec, its cause on the command
    line."""

    def __init__(self, lookup, path, text, blame=None):
        self.lookup = lookup  # name -> value, or raises KeyError
        self.path, self.text = path, text
        self.blame = blame

    def error(self, msg, node, hint=None, cls=SpecError, **extra) -> SpecError:
        note = self.blame(node) if self.blame is not None else None
        if note:
            msg += f" ({note})"
        pos = getattr(node, "pos", None)
        if pos is None:
            return cls(msg, file=self.path, hint=hint, **extra)
        lines = self.text.split("\n")  # as lark counts lines
        src = lines[pos.line - 1] if 0 < pos.line <= len(lines) else ""
        return cls(msg, file=self.path, line=pos.line, column=pos.column, source_line=src,
                   hint=hint, **extra)

    def _small(self, n, node, what):
        if n > MAX_ITEMS:
            raise self.error(f"{what} of more than {MAX_ITEMS:,} values is past the limit", node)

    def __call__(self, e):
        try:
            return self._eval(e)
        except RecursionError:
            raise self.error("expression nested too deeply", e) from None

    def _eval(self, e):
        if isinstance(e, (ast.Num, ast.Bool)):
            return e.value
        if isinstance(e, ast.Dims):
            return Dims(e.values)
        if isinstance(e, ast.List):
            items = [self._eval(x) for x in e.items]
            n = 0
            for x in items:
                n += size(x, MAX_ITEMS - n)
                self._small(n, e, "a list")
            return tuple(items)
        if isinstance(e, ast.EdgeList):
            return Edges(e.edges, self.path, self.text)
        if isinstance(e, ast.Name):
            return self._name(e)
        if isinstance(e, ast.Unary):
            v = self._eval(e.operand)
            if e.op == "not":
                return not self._bool(v, e.operand, "`not`")
            return -self._num(v, e.operand, "`-`")
        if isinstance(e, ast.IfElse):
            if self._bool(self._eval(e.cond), e.cond, "`if`"):
                return self._eval(e.then)
            return self._eval(e.else_)
        if isinstance(e, ast.BinOp):
            return self._binop(e)
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.Index):
            return self._index(e)
        raise self.error(f"cannot evaluate {type(e).__name__}", e)

    def _name(self, e):
        try:
            return self.lookup(e.id)
        except KeyError:
            pass
        if e.id in SYMBOLS:
            return Policy((e.id,)) if e.id in ("x0", "xn", "last") else Sym(e.id)
        if _STAGE.match(e.id):
            return Policy((e.id,))
        known = list(SYMBOLS) + list(getattr(self.lookup, "names", lambda: [])())
        raise self.error(f"unknown name {e.id!r}", e, did_you_mean(e.id, known), UnknownName,
                         name=e.id)

    def _num(self, v, node, what):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(f"{what} needs a number, got {_type_name(v)} ({show(v)})", node)
        return v

    def _bool(self, v, node, what):
        if not isinstance(v, bool):
            raise self.error(f"{what} needs true or false, got {_type_name(v)} ({show(v)})", node)
        return v

    def _binop(self, e):
        op = e.op
        if op in ("and", "or"):
            left = self._bool(self._eval(e.left), e.left, f"`{op}`")
            if (op == "and" and not left) or (op == "or" and left):
                return left
            return self._bool(self._eval(e.right), e.right, f"`{op}`")
        a, b = self._eval(e.left), self._eval(e.right)
        if op in ("==", "!="):
            same = (a == b) and kind(a) == kind(b)
            return same if op == "==" else not same
        if op == "+" and isinstance(a, (Policy, Sym)) and isinstance(b, (Policy, Sym)):
            a, b = self._policy(a, e.left), self._policy(b, e.right)
            self._small(len(a) + len(b), e, "a policy")
            return Policy(a + b)
        if op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
            self._small(size(a) + size(b), e, "a list")
            return a + b
        a = self._num(a, e.left, f"`{op}`")
        b = self._num(b, e.right, f"`{op}`")
        if op in ("<", "<=", ">", ">="):
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        if op in ("/", "//", "%") and b == 0:
            raise self.error("division by zero", e.right)
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                r = a / b
            elif op == "//":
                r = a // b
            else:
                r = a % b
        except OverflowError:
            raise self.error("number too large", e) from None
        if isinstance(r, float) and not math.isfinite(r):
            raise self.error("number too large", e)
        if isinstance(r, int) and r.bit_length() > 64:
            raise self.error("number too large", e)
        return r

    def _policy(self, v, node):
        if isinstance(v, Policy):
            return v.parts
        if v == Sym("none"):
            return ()
        raise self.error(f"`{v}` is not a feature source (x0, stage1, stage2, ..., last, xn)",
                         node)

    def _index(self, e):
        items = self._eval(e.base)
        if not isinstance(items, tuple):
            raise self.error(f"only a list can be indexed, got {_type_name(items)} "
                             f"({show(items)})", e.base)
        i = self._eval(e.index)
        if isinstance(i, float) and i.is_integer():
            i = int(i)
        if isinstance(i, bool) or not isinstance(i, int):
            raise self.error(f"a list index is a whole number, got {show(i)}", e.index)
        if not 0 <= i < len(items):
            raise self.error(f"index {i} is outside the list of {len(items)} "
                             f"(its items are 0 .. {len(items) - 1})", e.index)
        return items[i]

    def _call(self, e):
        f = e.func
        if f not in FUNCTIONS:
            raise self.error(f"unknown function {f!r}", e, did_you_mean(f, FUNCTIONS))
        if f in GENERATORS:
            return self._generator(e)
        if any(a.name for a in e.args):
            raise self.error(f"{f}() takes no named arguments", e)
        args = [self._eval(a.value) for a in e.args]
        if f == "len":
            if len(args) != 1 or not isinstance(args[0], tuple):
                raise self.error("len() takes one list", e)
            return len(args[0])
        if f == "sum":
            if len(args) != 1 or not isinstance(args[0], tuple):
                raise self.error("sum() takes one list of numbers", e)
            return sum(self._num(a, e, "sum()") for a in args[0])
        if f == "divisible":
            return self._divisible(e, args)
        if f in ("min", "max"):
            if len(args) == 1 and isinstance(args[0], tuple):
                args = list(args[0])
            if not args:
                raise self.error(f"{f}() of nothing", e)
            nums = [self._num(a, e, f"{f}()") for a in args]
            return min(nums) if f == "min" else max(nums)
        if len(args) != 1:
            raise self.error(f"{f}() takes one number", e)
        x = self._num(args[0], e.args[0].value, f"{f}()")
        return {"floor": math.floor, "ceil": math.ceil, "round": round}[f](x)

    def _divisible(self, e, args):
        """A width rounded to a multiple of d as MobileNet and EfficientNet round theirs: to
        the nearest multiple (halves up), at least d, and never more than 10% below v (one
        multiple up if so)."""
        if len(args) != 2:
            raise self.error("divisible() takes a width and a divisor: divisible(32 * w, 8)", e)
        v = self._num(args[0], e.args[0].value, "divisible()")
        d = self._num(args[1], e.args[1].value, "divisible()")
        if isinstance(d, float) or d < 1:
            raise self.error(f"divisible()'s divisor is a whole number of at least 1, got "
                             f"{show(d)}", e.args[1].value)
        r = max(d, int(v + d / 2) // d * d)
        return r + d if r < 0.9 * v else r

    def _generator(self, e):
        spec = GENERATORS[e.func]
        kwargs = {}
        for a in e.args:
            if a.name is None:
                raise self.error(f"{e.func}() takes named arguments: "
                                 + ", ".join(f"{k} = ..." for k in spec), a.value)
            if a.name not in spec:
                raise self.error(f"{e.func}() has no argument {a.name!r}", a,
                                 did_you_mean(a.name, spec) or "it takes "
                                 + ", ".join(spec))
            v = self._eval(a.value)
            want = spec[a.name]
            if want is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise self.error(f"{a.name} must be a whole number, got {show(v)}", a.value)
            if want is float:
                v = self._num(v, a.value, a.name)
                if not 0 <= v <= 1:
                    raise self.error(f"{a.name} is a probability in [0, 1], got {show(v)}",
                                     a.value)
            kwargs[a.name] = v
        missing = [k for k in spec if k not in kwargs and k != "seed"]
        if missing:
            raise self.error(f"{e.func}() needs " + ", ".join(f"{k} = ..." for k in missing), e)
        kwargs.setdefault("seed", 0)
        return Generator(e.func, tuple(sorted(kwargs.items())))
