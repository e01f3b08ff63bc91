"""The op table (cliquegraph/ops.py) defines each op kind once, and every stage of the pipeline
reads it: an activation added there alone (relu6, silu, sigmoid, hardswish, hardsigmoid) parses,
prints back, elaborates, lowers, runs as the reference does, draws and is estimated."""

import pytest
import torch
from torch import nn

from cliquegraph import elaborate, ops
from cliquegraph.estimate import estimate_memory
from cliquegraph.fmt import fmt
from cliquegraph.lower import lower
from cliquegraph.parse import grammar_text, parse
from cliquegraph.reference import NaiveNet
from cliquegraph.render import network_diagram

ACTIVATIONS = {"relu6": nn.ReLU6, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
               "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid}

SPEC = """network act {{
  input 3x8x8
  stem {{ conv 3x3 8; bn; {a} }}
  blocks 2 {{ layers 3; width 4; dropout 0.1 }}
  transition {{ bn; {a}; conv 1x1 C; pool avg 2 }}
  head {{ bn; {a}; pool global; fc 5; {a} }}
}}
"""


def build(tmp_path, act):
    path = tmp_path / f"{act}.clq"
    path.write_text(SPEC.format(a=act))
    return elaborate(path)


def kinds(net):
    return [op.kind for section in (net.stem, *net.transitions, net.head) for op in section]


def test_every_kind_written_in_a_spec_has_its_grammar_rule():
    rules = grammar_text()
    for syntax in ops.SYNTAX.values():
        assert f"{syntax.rule}:" in rules or f"-> {syntax.rule}" in rules, syntax.rule


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_an_activation_prints_back_as_written(act):
    spec = parse(SPEC.format(a=act))
    text = fmt(spec)
    assert f"  {act}\n" in text
    assert parse(text) == spec


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_an_activation_owns_no_parameters_and_keeps_the_shape(tmp_path, act):
    net, relu = build(tmp_path, act), build(tmp_path, "relu")
    assert kinds(net) == [k.replace("relu", act) for k in kinds(relu)]
    assert lower(net).state_dict().keys() == lower(relu).state_dict().keys()
    assert [op.out_shape for op in net.stem] == [op.out_shape for op in relu.stem]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("training", [False, True])
def test_an_activation_runs_as_the_reference_does(tmp_path, act, training):
    net = build(tmp_path, act)
    gm = lower(net).double()
    # the stem, the transition, each scale of the head, and after the fc
    assert sum(isinstance(m, ACTIVATIONS[act]) for m in gm.modules()) == 3 + len(net.scales)
    ref = NaiveNet(net, gm)
    gm.train(training)
    ref.train(training)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def run(module):  # one seed per pass: dropout draws the same mask in both forms
        torch.manual_seed(7)
        return module(x)

    torch.testing.assert_close(run(gm), run(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_an_activation_is_drawn_and_estimated(tmp_path, act):
    net = build(tmp_path, act)
    label = ops.KINDS[act].label(net.stem[-1])
    assert f"BN-{label}" in network_diagram(net).source
    assert estimate_memory(net, 4).total > 0
