"""attrs.py, the block-attribute table: it is what the language accepts in a block, its
defaults are what a block gets when it says nothing, and it sets every field of ir.Block."""

import dataclasses

import pytest

from cliquegraph import elaborate, fmt, ir, parse
from cliquegraph.attrs import ATTRS, REQUIRED
from cliquegraph.errors import SpecError
from cliquegraph.values import Policy, Sym

SPEC = """network n {{
  input 3x8x8
  stem {{ conv 3x3 4 }}
  blocks 2 {{ layers 3; width 2; {attrs} }}
  transition {{ conv 1x1 C; pool avg 2 }}
  head {{ pool global; fc 2 }}
}}
"""


def _written(value) -> str:
    if value == ():
        return "{ }"
    if isinstance(value, Sym):
        return value.name
    if isinstance(value, Policy):
        return " + ".join(value.parts)
    return str(value)


def _net(tmp_path, attrs, name="n.clq"):
    path = tmp_path / name
    path.write_text(SPEC.format(attrs=attrs))
    return elaborate(path)


def test_writing_every_default_changes_nothing(tmp_path):
    # unit's and shortcut's defaults are made from other attributes (None): not writable
    defaults = "; ".join(f"{a.name} {_written(a.default)}" for a in ATTRS.values()
                         if a.default is not REQUIRED and a.default is not None)
    said, silent = _net(tmp_path, defaults, "said.clq"), _net(tmp_path, "", "silent.clq")
    for a, b in zip(said.blocks, silent.blocks):
        assert dataclasses.replace(a, graph=None) == dataclasses.replace(b, graph=None)
        assert sorted(a.graph.edges) == sorted(b.graph.edges)


def test_the_table_sets_every_field_of_a_block_once(tmp_path, monkeypatch):
    from cliquegraph import attrs
    seen = []

    def recording(attr):
        def resolve(r, v, got):
            fields = attr.resolve(r, v, got)
            seen.extend(fields)
            return fields
        return dataclasses.replace(attr, resolve=resolve)

    for name in list(ATTRS):
        monkeypatch.setitem(attrs.ATTRS, name, recording(attrs.ATTRS[name]))
    net = _net(tmp_path, "")
    fields = {f.name for f in dataclasses.fields(ir.Block)} - {"index", "in_shape"}
    assert sorted(seen) == sorted(list(fields) * len(net.blocks))


@pytest.mark.parametrize("name", sorted(ATTRS))
def test_every_attribute_is_a_block_statement_fmt_keeps(name):
    value = ("3" if ATTRS[name].default is REQUIRED else
             "{ bn; relu; conv 1x1 K stride S }" if ATTRS[name].ops else
             _written(ATTRS[name].default))
    text = SPEC.format(attrs=f"{name} {value}")
    spec = parse(text)
    assert parse(fmt(spec)) == spec
    block = spec.items[0].body[2]
    assert [a.name for a in block.attrs][-1] == name


def test_a_name_not_in_the_table_is_refused_where_it_is_written(tmp_path):
    with pytest.raises(SpecError) as info:
        _net(tmp_path, "stagse 2")
    err = info.value
    assert err.message == "unexpected 'stagse'" and "'stages'" in err.hint
    assert (err.line, err.column) == (4, 33)
