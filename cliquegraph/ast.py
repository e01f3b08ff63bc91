"""The AST of a .clq file: plain frozen dataclasses, made by `parse` from lark's tree.

Positions (`pos`) take no part in equality, so parse(fmt(s)) == parse(s) compares meaning only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass(frozen=True)
class Pos:
    line: int
    column: int
    end_line: int
    end_column: int


def _pos():
    return field(default=None, compare=False, repr=False)


# ---- expressions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: Union[int, float]
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Dims:  # 3x3, 3x32x32
    values: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Bool:
    value: bool
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Name:  # a param, `C` inside ops, or a symbol (clique, x0, stage2, last, all, ...)
    id: str
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class List:
    items: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Arg:
    name: Optional[str]
    value: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Call:  # floor(x), len(widths), watts_strogatz(k = 2, p = 0.3, seed = 1)
    func: str
    args: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Index:  # widths[B - 1]
    base: "Expr"
    index: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class BinOp:  # + - * / // % == != < <= > >= and or
    op: str
    left: "Expr"
    right: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Unary:  # - not
    op: str
    operand: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class IfElse:
    cond: "Expr"
    then: "Expr"
    else_: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Edge:
    src: "Expr"
    arrow: str  # "->" or "<->"
    dst: "Expr"
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class EdgeList:  # edges { 0 -> 1, 1 <-> 2 }: a topology, so a value like clique
    edges: tuple
    pos: Optional[Pos] = _pos()


Expr = Union[Num, Dims, Bool, Name, List, Call, Index, BinOp, Unary, IfElse, EdgeList]


# ---- statements -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attr:
    """A block attribute (a name of attrs.ATTRS: layers, width, ...). Its value is an
    expression, or for the attributes that hold ops (unit, shortcut, post) `ops`, the ops
    written in braces (value is then None)."""
    name: str
    value: Optional[Expr]
    pos: Optional[Pos] = _pos()
    ops: Optional[tuple] = None


@dataclass(frozen=True)
class Op:
    """One op of a stem, transition or head: conv, bn, relu, dropout, pool, se, fc, scales.

    `args` holds the op's operands by name (kernel, out, stride, padding, bias, p, mode,
    reduction, value) as a sorted tuple of (name, value) pairs, so equal ops compare equal."""
    kind: str
    args: tuple = ()
    pos: Optional[Pos] = _pos()

    def arg(self, name, default=None):
        for key, value in self.args:
            if key == name:
                return value
        return default


@dataclass(frozen=True)
class Path:  # one path of a `branches` op: its ops
    ops: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class If:  # if COND { then } else { else_ } — around statements at any level
    cond: Expr
    then: tuple
    else_: tuple = ()
    pos: Optional[Pos] = _pos()
    else_pos: Optional[Pos] = _pos()  # the `else` keyword: fmt keeps each comment in its branch


@dataclass(frozen=True)
class Param:
    name: str
    value: Expr
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Input:
    value: Expr
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Section:  # stem / transition / head: a sequence of ops
    kind: str
    ops: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Blocks:
    count: Optional[Expr]
    attrs: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Network:
    name: str
    extends: Optional[str]
    body: tuple
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class Include:
    path: str
    pos: Optional[Pos] = _pos()


@dataclass(frozen=True)
class SpecFile:
    items: tuple  # Include and Network, in file order
    path: str = field(default="<spec>", compare=False)
    text: str = field(default="", compare=False, repr=False)
    comments: tuple = field(default=(), compare=False, repr=False)  # (line, column, text)

    @property
    def networks(self):
        return tuple(item for item in self.items if isinstance(item, Network))
