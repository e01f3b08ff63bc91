"""Parse: .clq text -> AST (cliquegraph.ast). Nothing outside this module sees a lark tree.

Every failure is a SpecError at file:line:col: unreadable or special files (pipes, devices),
texts past 1 MiB, binary or non-UTF-8 text, nesting past a fixed depth, syntax errors with the
tokens that were expected there.
"""

from __future__ import annotations

import functools
import os
import stat
from importlib import resources

import lark
from lark import Transformer, v_args

from . import ast, ops
from .attrs import ATTRS
from .errors import SpecError, did_you_mean

MAX_SPEC_BYTES = 1 << 20  # a spec is a page of text; 1 MiB is already absurd
MAX_NESTING = 64          # brackets, braces and parentheses


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    grammar = resources.files("cliquegraph").joinpath("clq.lark").read_text(encoding="utf-8")
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                     start=["start", "expr"])  # expr: the VALUE of `--set NAME=VALUE`


@functools.lru_cache(maxsize=1)
def keywords() -> frozenset:
    """The words the grammar spells out (`conv`, `stride`, `else`, ...) and the block
    attributes' names (`layers`), which start a statement as keywords do."""
    return frozenset(t.pattern.value for t in _parser().terminals
                     if t.pattern.type == "str" and t.pattern.value.isidentifier()) | set(ATTRS)


def grammar_text() -> str:
    return resources.files("cliquegraph").joinpath("clq.lark").read_text(encoding="utf-8")


def read_spec(path) -> str:
    """The text of a spec file, or a SpecError saying why it cannot be read as one.

    Only a regular file is read: opening a named pipe or a terminal would wait for a writer
    for ever, and a device never ends."""
    path = os.fspath(path)
    try:
        _regular_file(os.stat(path), path)
        # non-blocking: a pipe swapped in after the stat must not block the open; fstat
        # below refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise SpecError("no such file", file=path) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", file=path) from None
    with open(fd, "rb") as fh:
        try:
            _regular_file(os.fstat(fd), path)
            data = fh.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            raise SpecError(f"cannot read: {exc.strerror or exc}", file=path) from None
    _check_size(len(data), path)
    return decode_spec(data, path)


def _regular_file(st, path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise SpecError("is a directory, not a .clq spec file", file=path)
    if not stat.S_ISREG(st.st_mode):
        what = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
        raise SpecError(f"not a regular file ({what}); a spec is read only from a file",
                        file=path)
    _check_size(st.st_size, path)


def _check_size(size: int, path) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a short text file",
                        file=path)


def decode_spec(data: bytes, path: str) -> str:
    if b"\x00" in data:
        line, col = _line_col(data, data.index(b"\x00"))
        raise SpecError("binary data (a NUL byte), not a .clq text file", file=path, line=line,
                        column=col, source_line=None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise SpecError("not valid UTF-8 text", file=path, line=line, column=col,
                        source_line=data.split(b"\n")[line - 1].decode("utf-8", "replace"),
                        hint="save the spec as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not text


def _line_col(data: bytes, offset: int):
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def source_lines(text: str) -> list:
    """The lines of a spec as lark counts them: only \n ends a line (a \r or a form feed in a
    comment does not)."""
    return text.split("\n")


def _source_line(text: str, line: int) -> str:
    lines = source_lines(text)
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _check_nesting(text: str, path: str) -> None:
    """Refuse absurd nesting before lark or the recursive passes ever see it."""
    depth, line, col = 0, 1, 0
    in_comment = in_string = False
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, in_comment, in_string = line + 1, 0, False, False
            continue
        if in_comment:
            continue
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch == "#":
            in_comment = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise SpecError(f"nesting deeper than {MAX_NESTING} levels", file=path, line=line,
                                column=col, source_line=_source_line(text, line),
                                hint="close the brackets opened before this one")
        elif ch in ")]}":
            depth -= 1


_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "DIMS": "a size like 3x3", "STRING": 'a "path"',
    "CMP": "a comparison", "ARROW": "-> or <->", "$END": "end of file",
    "ATTR": "a block attribute (" + ", ".join(ATTRS) + ")",
}


def _describe(names) -> str:
    terms = {t.name: t for t in _parser().terminals}
    words = set()
    for name in names:
        if name in _TOKEN_WORDS:
            words.add(_TOKEN_WORDS[name])
        elif name in terms and terms[name].pattern.type == "str":
            words.add(repr(terms[name].pattern.value).replace("'", "`"))
        else:
            words.add(name.lower())
    words = sorted(words)
    if len(words) > 14:
        words = words[:14] + [f"... ({len(words) - 14} more)"]
    return ", ".join(words)


def parse(text: str, path: str = "<spec>") -> ast.SpecFile:
    """Parse .clq text into an ast.SpecFile (includes are not followed here; see load)."""
    # a text (a checkpoint's spec, say) has the limit of a file; it has no more characters
    # than UTF-8 bytes, so a huge one is refused without encoding it
    _check_size(len(text) if len(text) > MAX_SPEC_BYTES
                else len(text.encode("utf-8", "surrogatepass")), path)
    _check_nesting(text, path)
    comments = []
    try:
        tree = _parser().parse(text, start="start")
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    # comments are kept for fmt: re-lex cheaply (the grammar ignores them)
    for lineno, line in enumerate(source_lines(text), 1):
        if "#" in line:
            comments.extend(_comments_of_line(line, lineno))
    items = _to_ast(tree, text, path)
    return ast.SpecFile(items=tuple(items), path=path, text=text, comments=tuple(comments))


def _to_ast(tree, text, path):
    try:
        return _ToAst(path, text).transform(tree)
    except RecursionError:
        raise SpecError("expression nested too deeply", file=path, line=1, column=1,
                        source_line=_source_line(text, 1)) from None
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, SpecError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, RecursionError):
            raise SpecError("expression nested too deeply", file=path) from None
        raise


def _comments_of_line(line: str, lineno: int):
    in_string = False
    for col, ch in enumerate(line, 1):
        if ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            return [(lineno, col, line[col - 1:].rstrip())]
    return []


def _syntax_error(exc, text, path) -> SpecError:
    line, col = getattr(exc, "line", None), getattr(exc, "column", None)
    if line is None or line < 0:  # unexpected end of input: point after the last token
        lines = source_lines(text.rstrip())
        line, col = len(lines), len(lines[-1]) + 1
    src = _source_line(text, line)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        msg = f"unexpected character {ch!r}"
        expected = exc.allowed
    elif isinstance(exc, lark.exceptions.UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            msg = "unexpected end of file"
            lines = source_lines(text.rstrip())
            line, col = len(lines), len(lines[-1]) + 1
            src = lines[-1]
        else:
            msg = f"unexpected {tok.value!r}" if len(str(tok.value)) < 40 else "unexpected token"
        # exc.expected is LALR's lookahead set, which can hold tokens the parser would refuse
        # here; the interactive parser knows the ones it accepts
        parser = getattr(exc, "interactive_parser", None)
        expected = parser.accepts() if parser is not None else exc.expected
    else:  # UnexpectedEOF
        msg = "unexpected end of file"
        expected = getattr(exc, "expected", [])
    if expected and {"NAME", "BN", "DROPOUT"} <= set(expected):  # where a block attribute goes
        expected = [e for e in expected if e not in ("NAME", "BN", "DROPOUT")] + ["ATTR"]
    hint = f"expected {_describe(expected)}" if expected else None
    if isinstance(exc, lark.exceptions.UnexpectedToken) and exc.token.type == "NAME":
        terms = {t.name: t.pattern.value for t in _parser().terminals if t.pattern.type == "str"}
        close = did_you_mean(str(exc.token.value), [terms[e] for e in expected if e in terms])
        if close:  # a misspelt keyword: `layer 3`
            hint = f"{close} ({hint})"
    return SpecError(msg, file=path, line=line, column=col, source_line=src, hint=hint)


def _pos(meta) -> ast.Pos | None:
    if meta is None or getattr(meta, "empty", True):
        return None
    return ast.Pos(meta.line, meta.column, meta.end_line, meta.end_column)


def _tokpos(tok) -> ast.Pos:
    return ast.Pos(tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column)


@v_args(meta=True)
class _ToAst(Transformer):
    """One method per grammar rule, each returning a plain AST value."""

    def __init__(self, path, text):
        super().__init__()
        self.path, self.text = path, text

    def _err(self, msg, pos, hint=None):
        return SpecError(msg, file=self.path, line=pos.line, column=pos.column,
                         source_line=_source_line(self.text, pos.line), hint=hint)

    # -- file and network
    def start(self, meta, items):
        return items

    def include(self, meta, c):
        return ast.Include(c[0][1:-1], _pos(meta))

    def network(self, meta, c):
        name, parent, body = c
        return ast.Network(str(name), str(parent) if parent is not None else None, body,
                           _pos(meta))

    def netbody(self, meta, c):
        return tuple(c)

    blockbody = opbody = netbody

    def _if(self, meta, c):
        cond, then, else_kw, else_ = c
        return ast.If(cond, then, else_ if else_ is not None else (), _pos(meta),
                      _tokpos(else_kw) if else_kw is not None else None)

    netif = blockif = opif = _if

    def param(self, meta, c):
        return ast.Param(str(c[0]), c[1], _pos(meta))

    def input(self, meta, c):
        return ast.Input(c[0], _pos(meta))

    def stem(self, meta, c):
        return ast.Section("stem", c[0], _pos(meta))

    def transition(self, meta, c):
        return ast.Section("transition", c[0], _pos(meta))

    def head(self, meta, c):
        return ast.Section("head", c[0], _pos(meta))

    def blocks(self, meta, c):
        return ast.Blocks(c[0], c[1], _pos(meta))

    # -- block attributes
    def attrname(self, meta, c):
        return c[0]

    def attr(self, meta, c):
        name = str(c[0])
        if name not in ATTRS:  # as the parser says of a misspelt keyword
            raise self.error(f"unexpected {name!r}", c[0],
                             did_you_mean(name, list(ATTRS))
                             or f"a block attribute is one of {', '.join(ATTRS)}")
        takes_ops = ATTRS[name].ops
        none = (ATTRS[name].none and isinstance(c[1], ast.Name) and c[1].id == "none")
        if isinstance(c[1], tuple) != takes_ops and not none:
            raise self.error(f"{name} takes " + (f"ops in braces: `{name} {{ ... }}`" + (
                f" or `{name} none`" if ATTRS[name].none else "") if takes_ops
                else "a value, not ops in braces"), c[0])
        if takes_ops and not none:
            return ast.Attr(name, None, _pos(meta), ops=c[1])
        return ast.Attr(name, c[1], _pos(meta))

    def edgelist(self, meta, c):
        return ast.EdgeList(tuple(e for e in c if e is not None), _pos(meta))

    def edge(self, meta, c):
        return ast.Edge(c[0], str(c[1]), c[2], _pos(meta))

    # -- ops: one method per rule of the op table (added after the class)
    def error(self, msg, tok, hint=None):
        return self._err(msg, _tokpos(tok), hint)

    def token_name(self, tok):
        return ast.Name(str(tok), _tokpos(tok))

    def _op(self, kind, meta, args):
        return ast.Op(kind, tuple(sorted(args.items())), _pos(meta))

    def stride(self, meta, c):
        return ("stride", c[0])

    def padding(self, meta, c):
        return ("padding", c[0])

    def groups(self, meta, c):
        return ("groups", c[0])

    def bias(self, meta, c):
        return ("bias", ast.Bool(True))

    def ceil(self, meta, c):
        return ("ceil", ast.Bool(True))

    def branch(self, meta, c):  # a `path { ... }` (self.path is the file's)
        return ast.Path(c[0], _pos(meta))

    def _option(name):
        def method(self, meta, c):
            return (name, c[0])
        return method

    eps, momentum, reduction, hidden = (_option("eps"), _option("momentum"),
                                        _option("reduction"), _option("hidden"))
    act, gate = _option("act"), _option("gate")
    del _option

    def scales(self, meta, c):
        return self._op("scales", meta, {"value": c[0]})

    # -- expressions
    def number(self, meta, c):
        text = str(c[0])
        try:
            value = int(text) if text.isdigit() else float(text)
        except (ValueError, OverflowError):
            raise self._err(f"bad number {text!r}", _tokpos(c[0])) from None
        if isinstance(value, float) and value in (float("inf"),):
            raise self._err(f"number {text!r} is out of range", _tokpos(c[0]))
        return ast.Num(value, _tokpos(c[0]))

    def dims(self, meta, c):
        return ast.Dims(tuple(int(v) for v in str(c[0]).split("x")), _tokpos(c[0]))

    def true(self, meta, c):
        return ast.Bool(True, _pos(meta))

    def false(self, meta, c):
        return ast.Bool(False, _pos(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), _tokpos(c[0]))

    def list(self, meta, c):
        return ast.List(tuple(x for x in c if x is not None), _pos(meta))

    def call(self, meta, c):
        return ast.Call(str(c[0]), tuple(a for a in c[1:] if a is not None), _pos(meta))

    def index(self, meta, c):
        return ast.Index(c[0], c[1], _pos(meta))

    def arg(self, meta, c):
        return ast.Arg(str(c[0]) if c[0] is not None else None, c[1], _pos(meta))

    def _bin(op):
        def method(self, meta, c):
            return ast.BinOp(op, c[0], c[1], _pos(meta))
        return method

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")
    floordiv, mod, or_op, and_op = _bin("//"), _bin("%"), _bin("or"), _bin("and")
    del _bin

    def cmp(self, meta, c):
        return ast.BinOp(str(c[1]), c[0], c[2], _pos(meta))

    def neg(self, meta, c):
        return ast.Unary("-", c[0], _pos(meta))

    def not_op(self, meta, c):
        return ast.Unary("not", c[0], _pos(meta))

    def ifelse(self, meta, c):
        return ast.IfElse(c[0], c[1], c[2], _pos(meta))


def _op_rule(syntax):
    def method(self, meta, c):
        return self._op(syntax.word, meta, syntax.parse(c, self))
    return method


for _syntax in ops.SYNTAX.values():
    setattr(_ToAst, _syntax.rule, v_args(meta=True)(_op_rule(_syntax)))


def parse_file(path) -> ast.SpecFile:
    path = os.fspath(path)
    return parse(read_spec(path), path)


def parse_value(text: str, where: str = "<--set>") -> ast.Expr:
    """Parse one expression (the VALUE of `--set NAME=VALUE`); its positions are in `text`."""
    if "\n" in text:
        raise SpecError("a --set value is one line", file=where)
    _check_size(len(text), where)  # a str given to build() can be any length
    _check_nesting(text, where)
    try:
        tree = _parser().parse(text, start="expr")
    except lark.exceptions.UnexpectedInput as exc:
        err = _syntax_error(exc, text, where)
        raise SpecError(err.message.replace("end of file", "end of value"), file=where, line=1,
                        column=err.column, source_line=text,
                        hint=err.hint and err.hint.replace("end of file", "end of value")) from None
    return _to_ast(tree, text, where)
