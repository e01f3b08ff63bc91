"""fmt: AST -> canonical .clq text. parse(fmt(s)) == parse(s), and fmt is idempotent.

One statement per line, two-space indents, the fewest parentheses that keep the meaning; comments
stay with the statement they stood before or beside.
"""

from __future__ import annotations

import re

from . import ast, ops
from .parse import keywords

# binding strength of each expression form: higher binds tighter
_LEVEL = {"ifelse": 0, "or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5,
          "*": 6, "/": 6, "//": 6, "%": 6, "neg": 7, "postfix": 8,
          "atom": 9}
_CMP = {"==", "!=", "<", "<=", ">", ">="}


def _level(e) -> int:
    if isinstance(e, ast.Index):
        return _LEVEL["postfix"]
    if isinstance(e, ast.IfElse):
        return 0
    if isinstance(e, ast.BinOp):
        return _LEVEL["cmp"] if e.op in _CMP else _LEVEL[e.op]
    if isinstance(e, ast.Unary):
        return _LEVEL["neg"] if e.op == "-" else _LEVEL["not"]
    return _LEVEL["atom"]


def _num(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    text = repr(float(v))
    return text if ("." in text or "e" in text) else text + ".0"


def expr(e, min_level: int = 0) -> str:
    """Print an expression; wrap it in parentheses if it binds looser than min_level."""
    text = _expr(e)
    return f"({text})" if _level(e) < min_level else text


def _expr(e) -> str:
    if isinstance(e, ast.Num):
        return _num(e.value)
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.Dims):
        return "x".join(str(v) for v in e.values)
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.List):
        return "[" + ", ".join(expr(x) for x in e.items) + "]"
    if isinstance(e, ast.Call):
        args = [(f"{a.name} = " if a.name else "") + expr(a.value) for a in e.args]
        return f"{e.func}(" + ", ".join(args) + ")"
    if isinstance(e, ast.Index):
        return f"{expr(e.base, _LEVEL['postfix'])}[{expr(e.index)}]"
    if isinstance(e, ast.Unary):
        if e.op == "-":
            return "-" + expr(e.operand, _LEVEL["neg"])
        return "not " + expr(e.operand, _LEVEL["not"])
    if isinstance(e, ast.BinOp):
        lvl = _level(e)
        if e.op in _CMP:  # not associative: both sides must bind tighter
            return f"{expr(e.left, lvl + 1)} {e.op} {expr(e.right, lvl + 1)}"
        return f"{expr(e.left, lvl)} {e.op} {expr(e.right, lvl + 1)}"
    if isinstance(e, ast.IfElse):
        return f"if {expr(e.cond, 1)} then {expr(e.then, 1)} else {expr(e.else_)}"
    if isinstance(e, ast.EdgeList):
        edges = ", ".join(f"{expr(x.src)} {x.arrow} {expr(x.dst)}" for x in e.edges)
        return "edges { " + edges + " }" if edges else "edges {}"
    raise TypeError(f"not an expression: {e!r}")


class _Printer:
    def __init__(self, comments):
        self.lines: list[str] = []
        self.comments = sorted(comments)
        self.next = 0  # index of the first comment not yet printed
        self.trailing: dict[int, str] = {}  # line index -> its trailing comment

        self.last_src = None  # source line of the last thing printed

    def _gap(self, src_line):
        """Keep one blank line where the author left one or more (not right after `{`)."""
        if (self.last_src is not None and src_line > self.last_src + 1 and self.lines
                and self.lines[-1].strip() and not self.lines[-1].endswith("{")):
            self.lines.append("")

    def _flush_before(self, line, indent):
        while self.next < len(self.comments) and self.comments[self.next][0] < line:
            self._gap(self.comments[self.next][0])
            self.lines.append("  " * indent + self.comments[self.next][2])
            self.last_src = self.comments[self.next][0]
            self.next += 1
        if line != float("inf"):
            self._gap(line)

    def _flush_trailing(self, last_line):
        while self.next < len(self.comments) and self.comments[self.next][0] <= last_line:
            at = len(self.lines) - 1
            self.trailing[at] = (self.trailing[at] + " " if at in self.trailing else "") \
                + self.comments[self.next][2]
            self.next += 1

    def text(self) -> str:
        """The lines, with trailing comments of neighbouring lines aligned in one column."""
        out = list(self.lines)
        run: list[int] = []
        for i in range(len(out) + 1):
            if i in self.trailing and (not run or i == run[-1] + 1):
                run.append(i)
                continue
            if run:
                col = max(len(out[j]) for j in run) + 2
                for j in run:
                    out[j] = out[j].ljust(col) + self.trailing[j]
            run = [i] if i in self.trailing else []
        return "\n".join(out) + "\n"

    def emit(self, node, indent, text_lines_fn):
        pos = getattr(node, "pos", None)
        if pos is not None:
            self._flush_before(pos.line, indent)
        text_lines_fn()
        if pos is not None:
            self._flush_trailing(pos.end_line)
            self.last_src = pos.end_line

    def line(self, indent, text):
        self.lines.append("  " * indent + text)

    def block(self, node, indent, opener, children, child_fn, end_line=None):
        """`opener {` children `}`; the block ends on source line `end_line` (default: where the
        node ends)."""
        pos = getattr(node, "pos", None)
        if pos is not None:
            self._flush_before(pos.line, indent)
        self.line(indent, opener + " {")
        if pos is not None:
            self._flush_trailing(pos.line)
            self.last_src = pos.line
        for child in children:
            child_fn(child, indent + 1)
        self.close(indent, end_line or (pos.end_line if pos is not None else None))

    def close(self, indent, end_line):
        """The `}` of a block that ends on source line end_line: it gets the comments left
        inside."""
        if end_line is not None:
            self._flush_before(end_line, indent + 1)
        self.line(indent, "}")
        if end_line is not None:
            self._flush_trailing(end_line)
            self.last_src = end_line


def fmt(spec: ast.SpecFile) -> str:
    p = _Printer(spec.comments)
    first = True
    for item in spec.items:
        first = first and not p.lines
        if isinstance(item, ast.Include):
            p.emit(item, 0, lambda item=item: p.line(0, f'include "{item.path}"'))
            continue
        if not first and p.lines and p.lines[-1]:
            p.lines.append("")
        first = False
        opener = f"network {item.name}" + (f" extends {item.extends}" if item.extends else "")
        p.block(item, 0, opener, item.body, lambda s, ind: _stmt(p, s, ind))
    p._flush_before(float("inf"), 0)
    return p.text()


def _if(p, node, indent, child_fn):
    if not node.else_:
        p.block(node, indent, f"if {expr(node.cond)}", node.then, child_fn)
        return
    # the then-branch closes on the line of `else`: comments above it stay in the then-branch
    then_end = node.else_pos.line if node.pos is not None and node.else_pos is not None else None
    p.block(node, indent, f"if {expr(node.cond)}", node.then, child_fn, then_end)
    p.lines[-1] = "  " * indent + "} else {"  # shares the closing line of the then-branch
    for child in node.else_:
        child_fn(child, indent + 1)
    p.close(indent, node.pos.end_line if node.pos is not None else None)


def _stmt(p, s, indent):
    if isinstance(s, ast.Param):
        p.emit(s, indent, lambda: p.line(indent, f"param {s.name} = {expr(s.value)}"))
    elif isinstance(s, ast.Input):
        p.emit(s, indent, lambda: p.line(indent, f"input {expr(s.value)}"))
    elif isinstance(s, ast.Section):
        p.block(s, indent, s.kind, s.ops, lambda o, ind: _op(p, o, ind))
    elif isinstance(s, ast.Blocks):
        opener = "blocks" + (f" {expr(s.count)}" if s.count is not None else "")
        p.block(s, indent, opener, s.attrs, lambda a, ind: _attr(p, a, ind))
    elif isinstance(s, ast.If):
        _if(p, s, indent, lambda c, ind: _stmt(p, c, ind))
    else:
        raise TypeError(f"not a network statement: {s!r}")


def _attr(p, a, indent):
    if isinstance(a, ast.If):
        _if(p, a, indent, lambda c, ind: _attr(p, c, ind))
        return
    if a.ops is not None:
        p.block(a, indent, a.name, a.ops, lambda o, ind: _op(p, o, ind))
        return
    p.emit(a, indent, lambda: p.line(indent, f"{a.name} {expr(a.value)}"))


def _op(p, o, indent):
    if isinstance(o, ast.If):
        _if(p, o, indent, lambda c, ind: _op(p, c, ind))
        return
    if o.kind == "branches":  # a block of paths, each a block of ops
        opener = "branches split" if o.arg("split") is not None else "branches"
        p.block(o, indent, opener, o.arg("paths"), lambda path, ind: p.block(
            path, ind, "path", path.ops, lambda c, i: _op(p, c, i)))
        return
    p.emit(o, indent, lambda: p.line(indent, op_text(o)))


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _after_atom(e, min_level: int = 0) -> str:
    """An expression printed right after an atom (conv's width, pool's size). There every word
    of the grammar is read as that keyword, so a param called `layers` or `stride` that starts
    the expression is parenthesized."""
    text = expr(e, min_level)
    word = _WORD.match(text)
    if word and word.group() in keywords() and word.group() not in ("if", "not", "true", "false"):
        return f"({text})"
    return text


def op_text(o: ast.Op) -> str:
    if o.kind == "scales":
        return f"scales {expr(o.arg('value'))}"
    if o.kind not in ops.SYNTAX:
        raise TypeError(f"unknown op {o.kind!r}")
    return ops.SYNTAX[o.kind].text(o, _operand)


def _operand(e, atom=False, after_atom=False) -> str:
    """An op's operand as fmt prints it: at atom level where the grammar wants an atom
    (conv's kernel, pool's size), guarded against keywords right after an atom."""
    level = _LEVEL["atom"] if atom else 0
    return _after_atom(e, level) if after_atom else expr(e, level)
