"""The one error type for spec problems: where it is, what is wrong, and what would be right."""

from __future__ import annotations

import difflib


class SpecError(Exception):
    """A problem with a .clq spec (or a --set override), located at file:line:col.

    The library raises it; the CLI prints `str(err)` and exits 1. `line`/`column` are 1-based and
    may be None for whole-file problems (a missing file, say).
    """

    def __init__(self, message, *, file=None, line=None, column=None, source_line=None,
                 hint=None):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        out = [f"{where}: error: {self.message}"]
        if self.line is not None and self.source_line is not None:
            text = self.source_line.expandtabs(1).rstrip("\r\n")
            if len(text) > 200:  # keep a minified or binary line readable: a window around col
                start = max(0, (self.column or 1) - 100)
                text, col = text[start:start + 200], (self.column or 1) - start
            else:
                col = self.column or 1
            gutter = f"{self.line:>5} | "
            out.append(gutter + text)
            out.append(" " * (len(gutter) - 2) + "| " + " " * (max(col, 1) - 1) + "^")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def error_at(spec, node, message, hint=None) -> SpecError:
    """A SpecError at an AST node of the spec file `spec` (an ast.SpecFile), showing its line;
    a node without a position blames the whole file."""
    pos = getattr(node, "pos", None)
    if pos is None:
        return SpecError(message, file=spec.path, hint=hint)
    lines = spec.text.split("\n")  # as lark counts lines
    return SpecError(message, file=spec.path, line=pos.line, column=pos.column,
                     source_line=lines[pos.line - 1] if pos.line <= len(lines) else "",
                     hint=hint)


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 epoch', '2 epochs'; '2 processes' with `words`."""
    return f"{n} " + (word if n == 1 else words or word + "s")


def did_you_mean(word: str, choices) -> str | None:
    """'did you mean ...' for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


class UserError(Exception):
    """A problem in what the user gave (data, a checkpoint, a run folder, a machine too small):
    its message is one paragraph for users. The CLI prints it and exits 1; subclasses live with
    the code that raises them (DataError, CheckpointError, TrainError, ...)."""
