"""The op table (cliquegraph/ops.py) defines each op kind once, and every stage of the pipeline
reads it: an activation added there alone (relu6, silu, sigmoid, hardswish, hardsigmoid) parses,
prints back, elaborates, lowers, runs as the reference does, draws and is estimated; so do the
ops the seeds' networks need (conv groups, pool adaptive, flatten, pad, cbam)."""

import pytest
import torch
from torch import nn

import cliquegraph
from cliquegraph import SpecError, count_params, elaborate, ops, units
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


def assert_runs_as_the_reference(net, gm, training):
    ref = NaiveNet(net, gm)
    gm.train(training)
    ref.train(training)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def run(module):  # one seed per pass: dropout draws the same mask in both forms
        torch.manual_seed(7)
        return module(x)

    torch.testing.assert_close(run(gm), run(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("training", [False, True])
def test_an_activation_runs_as_the_reference_does(tmp_path, act, training):
    net = build(tmp_path, act)
    gm = lower(net).double()
    # the stem, the transition, each scale of the head, and after the fc
    assert sum(isinstance(m, ACTIVATIONS[act]) for m in gm.modules()) == 3 + len(net.scales)
    assert_runs_as_the_reference(net, gm, training)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_an_activation_is_drawn_and_estimated(tmp_path, act):
    net = build(tmp_path, act)
    label = ops.KINDS[act].label(net.stem[-1])
    assert f"BN-{label}" in network_diagram(net).source
    assert estimate_memory(net, 4).total > 0


# --- conv groups, pool adaptive, flatten, pad, cbam --------------------------------------------

NEW = """network new {{
  input 3x8x8
  stem {{ {stem} }}
  blocks 1 {{ layers 2; width 4; dropout 0.1 }}
  head {{ {head} }}
}}
"""
HEAD = "bn; relu; pool global; fc 5"
# each new op written in a tiny spec: (stem, head, the op as fmt prints it, its IR kind,
# its module's class)
NEW_OPS = {
    "groups": ("conv 3x3 8; bn; relu; conv 3x3 8 stride 2 groups 4 bias", HEAD,
               "conv 3x3 8 stride 2 groups 4 bias", "conv", nn.Conv2d),
    "depthwise": ("conv 3x3 8; bn; relu; conv 3x3 C groups C; bn; relu", HEAD,
                  "conv 3x3 C groups C", "conv", nn.Conv2d),
    "adaptive": ("conv 3x3 8; pool adaptive 3x5", HEAD, "pool adaptive 3x5", "apool",
                 nn.AdaptiveAvgPool2d),
    "adaptive_square": ("conv 3x3 8; pool adaptive 3", HEAD, "pool adaptive 3", "apool",
                        nn.AdaptiveAvgPool2d),
    "flatten": ("conv 3x3 8 stride 2", "bn; relu; pool adaptive 2; flatten; dropout 0.2; fc 6; "
                "relu; dropout 0.1; fc 5", "flatten", "flatten", nn.Flatten),
    "pad": ("conv 3x3 6; bn; relu; pad 10", HEAD, "pad 10", "pad", units.ZeroPadChannels),
    "cbam": ("conv 3x3 8; bn; relu; cbam reduction 4", HEAD, "cbam reduction 4", "cbam",
             units.CBAM),
}


def new_spec(case):
    stem, head = NEW_OPS[case][:2]
    return NEW.format(stem=stem, head=head)


def new_ops(net, kind):
    """The ops of `kind` in the stem, the transitions, the head's per-scale ops (up to its
    pool or flatten) and the head."""
    return [op for section in (net.stem, *net.transitions, *net.head_scale, net.head)
            for op in section if op.kind == kind]


@pytest.mark.parametrize("case", sorted(NEW_OPS))
def test_a_new_op_prints_back_as_written(case):
    spec = parse(new_spec(case))
    text = fmt(spec)
    assert f"    {NEW_OPS[case][2]}\n" in text
    assert parse(text) == spec
    assert fmt(parse(text)) == text


@pytest.mark.parametrize("case", sorted(NEW_OPS))
def test_a_new_op_compiles_and_its_parameters_are_counted(case):
    gm = cliquegraph.build(new_spec(case))
    net = gm.meta["cliquegraph"]["network"]
    kind, module = NEW_OPS[case][3:]
    assert new_ops(net, kind)
    assert count_params(net) == sum(p.numel() for p in gm.parameters())
    assert any(isinstance(m, module) for m in gm.modules())
    for op in new_ops(net, kind):
        assert op.params() == sum(p.numel() for p in lower_one(op).parameters())


def lower_one(op):
    return ops.KINDS[op.kind].module(op)


def test_conv_groups_reach_the_ir_the_module_and_the_parameter_count():
    net = cliquegraph.build(new_spec("groups")).meta["cliquegraph"]["network"]
    first, conv = new_ops(net, "conv")
    assert (first.groups, conv.groups) == (1, 4)
    assert conv.out_shape == (8, 4, 4)
    assert conv.params() == 8 * 8 // 4 * 3 * 3 + 8
    assert lower_one(conv).groups == 4
    depthwise = new_ops(cliquegraph.build(new_spec("depthwise")).meta["cliquegraph"]["network"],
                        "conv")[1]
    assert depthwise.groups == 8 and depthwise.params() == 8 * 1 * 3 * 3
    # written only where the spec writes it
    assert "groups" not in fmt(parse(NEW.format(stem="conv 3x3 8 stride 2", head=HEAD)))


def test_pool_adaptive_gives_its_output_size_whatever_the_input():
    net = cliquegraph.build(new_spec("adaptive")).meta["cliquegraph"]["network"]
    (pool,) = new_ops(net, "apool")
    assert pool.in_shape == (8, 8, 8) and pool.out_shape == (8, 3, 5)
    assert pool.kernel == (3, 5) and pool.params() == 0
    assert lower_one(pool).output_size == (3, 5)
    net = cliquegraph.build(new_spec("adaptive_square")).meta["cliquegraph"]["network"]
    assert new_ops(net, "apool")[0].out_shape == (8, 3, 3)


def test_flatten_makes_a_vector_that_fc_relu_and_dropout_take():
    net = cliquegraph.build(new_spec("flatten")).meta["cliquegraph"]["network"]
    (flat,) = new_ops(net, "flatten")
    c = flat.in_shape[0]
    assert flat.in_shape == (c, 2, 2) and flat.out_shape == (c * 4,)
    fc = new_ops(net, "fc")[0]
    assert fc.in_shape == (c * 4,) and fc.params() == c * 4 * 6 + 6
    assert [op.kind for op in net.head] == ["dropout", "fc", "relu", "dropout", "fc"]
    assert [op.out_shape for op in net.head] == [(c * 4,), (6,), (6,), (6,), (5,)]


def test_pad_appends_zero_channels_after_the_input():
    net = cliquegraph.build(new_spec("pad")).meta["cliquegraph"]["network"]
    (pad,) = new_ops(net, "pad")
    assert pad.in_shape == (6, 8, 8) and pad.out_shape == (10, 8, 8) and pad.params() == 0
    x = torch.randn(2, 6, 3, 3)
    y = units.ZeroPadChannels(10)(x)
    assert y.shape == (2, 10, 3, 3)
    assert torch.equal(y[:, :6], x) and not y[:, 6:].any()


def test_cbam_is_a_channel_then_a_spatial_gate():
    net = cliquegraph.build(new_spec("cbam")).meta["cliquegraph"]["network"]
    (op,) = new_ops(net, "cbam")
    assert op.hidden == 2 and op.out_shape == op.in_shape == (8, 8, 8)
    assert op.params() == 2 * 8 * 2 + 2 + 8 + 98 + 2
    m = lower_one(op)
    assert [name for name, _ in m.named_children()] == ["fc1", "fc2", "conv", "bn"]
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (8, 2, 8)
    assert m.conv.weight.shape == (1, 2, 7, 7) and m.conv.bias is None
    assert m.conv.padding == (3, 3)
    # by hand: max then mean, the MLP shared by the average- and the max-pooled vector
    torch.manual_seed(0)
    for p in m.parameters():
        torch.nn.init.normal_(p)
    m.eval()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    m.double()
    with torch.no_grad():
        mlp = lambda v: m.fc2(torch.relu(m.fc1(v)))  # noqa: E731
        g = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[..., None, None]
        s = torch.cat([g.max(1, keepdim=True).values, g.mean(1, keepdim=True)], 1)
        want = g * torch.sigmoid(m.bn(m.conv(s)))
        torch.testing.assert_close(m(x), want)
    # a reduction wider than the input still keeps one hidden unit
    one = NEW.format(stem="conv 3x3 8; cbam reduction 64", head=HEAD)
    assert new_ops(cliquegraph.build(one).meta["cliquegraph"]["network"], "cbam")[0].hidden == 1


@pytest.mark.parametrize("case", sorted(NEW_OPS))
@pytest.mark.parametrize("training", [False, True])
def test_a_new_op_runs_as_the_reference_does(case, training):
    gm = cliquegraph.build(new_spec(case)).double()
    net = gm.meta["cliquegraph"]["network"]
    for m in gm.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    assert_runs_as_the_reference(net, gm, training)


@pytest.mark.parametrize("case", sorted(NEW_OPS))
def test_a_new_op_is_drawn_and_estimated(case):
    net = cliquegraph.build(new_spec(case)).meta["cliquegraph"]["network"]
    kind = NEW_OPS[case][3]
    label = ops.KINDS[kind].label(new_ops(net, kind)[-1])
    assert label in network_diagram(net).source
    assert estimate_memory(net, 4).total > 0


def test_cbam_keeps_its_gated_map_and_its_bn_statistics():
    se = NEW.format(stem="conv 3x3 8; bn; relu; se reduction 4", head=HEAD)
    nets = [cliquegraph.build(t).meta["cliquegraph"]["network"] for t in (new_spec("cbam"), se)]
    cbam, se = (estimate_memory(net, 1) for net in nets)
    assert cbam.activations - se.activations == 8 * 8 * 8 * 4
    assert cbam.buffers - se.buffers == 2 * 4


@pytest.mark.parametrize("stem, head, message", [
    ("conv 3x3 8 groups 2", HEAD, "groups 2 must divide the conv's input width 3"),
    ("conv 3x3 8; conv 1x1 6 groups 4", HEAD, "groups 4 must divide .* output width 6"),
    ("conv 3x3 8 groups 0", HEAD, "groups must be at least 1"),
    ("conv 3x3 8; pad 6", HEAD, "pad 6 is below the input's 8 channels"),
    ("conv 3x3 8; pool adaptive 2 stride 2", HEAD, "takes its output size only"),
    ("conv 3x3 8; pool adaptive 2 padding 1", HEAD, "takes its output size only"),
    ("conv 3x3 8; pool adaptive", HEAD, "`pool adaptive` needs its output size"),
    ("conv 3x3 8; pool adaptive 0", HEAD, "at least 1"),
    ("conv 3x3 8; flatten", HEAD, "needs a feature map"),
    ("conv 3x3 8", "flatten; flatten; fc 5", "flatten needs a feature map"),
    ("conv 3x3 8", "pool global; cbam reduction 2; fc 5", "cbam needs a feature map"),
    ("conv 3x3 8", "pool global; pad 9; fc 5", "pad needs a feature map"),
    ("conv 3x3 8", "flatten; pool adaptive 1; fc 5", "pool needs a feature map"),
    ("conv 3x3 8; cbam reduction 0", HEAD, "cbam reduction must be at least 1"),
])
def test_a_new_op_written_wrong_says_why(stem, head, message):
    with pytest.raises(SpecError, match=message):
        cliquegraph.build(NEW.format(stem=stem, head=head))
