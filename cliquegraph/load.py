"""Load: a spec file and the files it includes -> the networks they define (AST), and the chain
of `extends` from a network's root ancestor down to it. What elaborate reads; also the
self-contained text of a network (`standalone`) that a checkpoint keeps.

Nothing here evaluates a param or resolves a shape: that is elaborate's job.
"""

from __future__ import annotations

import os

from . import ast
from .errors import SpecError, did_you_mean, error_at
from .fmt import fmt
from .parse import parse, parse_file, source_lines


def load(path, text=None, includes=True) -> tuple[dict, ast.Network]:
    """All networks visible from `path` (its own and its includes') and its main network.

    With `text`, that is the file's content (a spec kept in a checkpoint, say). With
    `includes=False` an `include` is an error: a checkpoint's text then reads no file at all."""
    path = os.fspath(path)
    networks: dict[str, tuple[ast.Network, ast.SpecFile]] = {}
    spec = _load_into(path, networks, stack=(), loaded=set(), text=text, includes=includes)
    if not spec.networks:
        lines = source_lines(spec.text.rstrip())
        hint = "expected `network NAME { ... }`"
        if any(isinstance(item, ast.Include) for item in spec.items):
            hint += "; `network NAME extends BASE { }` builds a network of an included file"
        raise SpecError("no network in this file", file=path, line=len(lines),
                        column=len(lines[-1]) + 1, source_line=lines[-1], hint=hint)
    return networks, spec.networks[-1]


def _load_into(path, networks, stack, loaded, text=None, includes=True):
    if includes:
        real = os.path.realpath(path)
        if real in stack:
            raise SpecError("include cycle: " + " -> ".join(stack + (real,)), file=path)
        if real in loaded:  # included before, through another file: once is enough
            return None
        loaded.add(real)
    spec = parse_file(path) if text is None else parse(text, path)
    for item in spec.items:
        if isinstance(item, ast.Include) and not includes:
            raise error_at(spec, item, f"cannot include {item.path!r}: a checkpoint's spec "
                           "text cannot include files",
                           "a checkpoint keeps its spec with every include inlined; this text "
                           "was edited or written by hand")
        if isinstance(item, ast.Include):
            target = os.path.join(os.path.dirname(path), item.path)
            try:
                _load_into(target, networks, stack + (real,), loaded)
            except SpecError as err:
                if err.file == target and err.line is None:  # missing include: point at it
                    raise error_at(spec, item,
                                   f"cannot include {item.path!r}: {err.message}") from None
                raise
        else:
            if item.name in networks and networks[item.name][1].path != spec.path:
                raise error_at(spec, item, f"network {item.name!r} is also defined in "
                               f"{networks[item.name][1].path}")
            if item.name in networks:
                raise error_at(spec, item,
                               f"network {item.name!r} is defined twice in this file")
            networks[item.name] = (item, spec)
    return spec


def lineage(networks, main: ast.Network):
    """[(network, file)] from the root ancestor down to `main`."""
    chain, seen = [], set()
    net, spec = networks[main.name]
    while True:
        if net.name in seen:
            raise error_at(spec, net, "extends cycle: "
                           + " -> ".join(n.name for n, _ in chain) + f" -> {net.name}")
        seen.add(net.name)
        chain.append((net, spec))
        if net.extends is None:
            break
        if net.extends not in networks:
            raise error_at(spec, net,
                           f"network {net.name!r} extends unknown network {net.extends!r}",
                           did_you_mean(net.extends, networks) or
                           'define it above, or `include "file.clq"` that defines it')
        net, spec = networks[net.extends]
    return chain[::-1]


def standalone(path) -> str:
    """The main network of `path` and its ancestors as one spec text with no includes: what a
    checkpoint keeps so the module can be rebuilt anywhere."""
    networks, main = load(path)
    return inline(lineage(networks, main))


def inline(chain) -> str:
    """A lineage ([(network, file)], root first) as one spec text with no includes."""
    return fmt(ast.SpecFile(items=tuple(net for net, _ in chain)))
