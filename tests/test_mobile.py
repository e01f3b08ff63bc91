"""What the efficient networks (MobileNet v1-v3, EfficientNet) need of the language, each
checked where it acts: list items and torchvision's channel rounding in expressions; BN's eps
and momentum; SE with its own hidden width, activation and gate; stochastic depth
(`droppath`), identity in eval and the expected keep rate in training, its rate growing over
the network as torchvision's; `shortcut none` (no residual where a unit changes the shape);
a grouped (depthwise) first conv where each update reads one input; and an EfficientNet
stage made a clique block, which trains and shares its W_ij across stages."""


import pytest
import torch

import cliquegraph
from cliquegraph import SpecError, count_params, elaborate
from cliquegraph.fmt import fmt
from cliquegraph.lower import lower
from cliquegraph.parse import parse, parse_value
from cliquegraph.reference import NaiveNet
from cliquegraph.values import Evaluator
from conftest import SPECS, stem_error


def value(text):
    def lookup(name):
        raise KeyError(name)
    return Evaluator(lookup, "<value>", text)(parse_value(text))


# ---- expressions ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("[16, 24, 32][1]", 24), ("[[1, 2], [3]][0][1]", 2), ("[1, 2, 3][3 - 1]", 3),
    ("-[4, 5][0]", -4), ("sum([1, 2, 3])", 6), ("sum([])", 0), ("[1, 2][0.0]", 1),
])
def test_a_list_item_and_a_sum(text, expected):
    assert value(text) == expected


def _torchvision_rounding(v, d):  # the rule as its papers state it, for the comparison
    r = max(d, int(v + d / 2) // d * d)
    return r + d if r < 0.9 * v else r


@pytest.mark.parametrize("v", [3, 12, 16 * 0.75, 35, 36, 37.5, 1280 * 1.1, 32 * 0.35, 96 * 0.5,
                               960 * 1.4, 1, 100])
def test_divisible_rounds_widths_as_mobilenet_and_efficientnet(v):
    assert value(f"divisible({v}, 8)") == _torchvision_rounding(v, 8)
    assert value(f"divisible({v}, 8)") % 8 == 0


def test_divisible_known_values():
    assert [value(f"divisible({v}, 8)") for v in (12, 35, 36, 3, 1408)] == [16, 32, 40, 8, 1408]


@pytest.mark.parametrize("text,message", [
    ("[1, 2][2]", "index 2 is outside the list of 2"),
    ("[1, 2][-1]", "index -1 is outside"),
    ("3[0]", "only a list can be indexed"),
    ("[1][0.5]", "a list index is a whole number"),
    ("divisible(3)", "divisible() takes a width and a divisor"),
    ("divisible(3, 0)", "divisor is a whole number of at least 1"),
    ("sum(3)", "sum() takes one list"),
])
def test_expression_errors_say_what_is_wrong(text, message):
    with pytest.raises(SpecError) as e:
        value(text)
    assert message in e.value.message


# ---- syntax round trip -------------------------------------------------------------------------

UNIT_SPEC = """network t {{
  param ks = [3, 5]
  input 3x8x8
  stem {{
    conv 3x3 8
    bn eps 0.001 momentum 0.01
    relu
  }}
  blocks 2 {{
    layers {n}
    width 8
    topology {topology}
    stages {stages}
    merge add
    unit {{
      conv 1x1 {expand}
      bn eps 0.001 momentum 0.01
      silu
      conv (ks[B - 1]) C groups C
      bn
      silu
      se hidden 2 act silu gate hardsigmoid
      conv 1x1 K
      bn
      droppath 0.2 linear
    }}
    shortcut none
    feature xn
    transit xn
  }}
  transition {{
    conv 1x1 12
  }}
  head {{
    scales last
    pool global
    fc 5
  }}
}}
"""


def unit_spec(tmp_path, n=2, topology="chain", stages=1, expand="2 * C", name="t.clq"):
    path = tmp_path / name
    path.write_text(UNIT_SPEC.format(n=n, topology=topology, stages=stages, expand=expand))
    return path


def test_the_new_ops_and_attributes_print_back_as_written(tmp_path):
    text = unit_spec(tmp_path).read_text()
    spec = parse(text)
    assert fmt(spec) == text
    for line in ("bn eps 0.001 momentum 0.01", "se hidden 2 act silu gate hardsigmoid",
                 "droppath 0.2 linear", "shortcut none", "conv (ks[B - 1]) C groups C"):
        assert line in text


@pytest.mark.parametrize("op,message", [
    ("se hidden 2 act tanh", "se act is one of relu, relu6, silu, hardswish, got 'tanh'"),
    ("se reduction 2 gate relu", "se gate is one of sigmoid, hardsigmoid"),
    ("se hidden 0", "se hidden width must be at least 1"),
    ("bn eps 0", "bn eps must be above 0"),
    ("bn momentum 1.5", "bn momentum is a probability in [0, 1)"),
    ("droppath 1", "droppath is a probability in [0, 1)"),
])
def test_bad_operands_are_refused_at_their_place(tmp_path, op, message):
    assert message in stem_error(tmp_path, f"conv 3x3 8; {op}", "3x8x8").message


def test_se_act_twice_is_a_syntax_error(tmp_path):
    with pytest.raises(SpecError) as e:
        parse("network b { input 3x8x8; stem { conv 3x3 8; se hidden 2 act silu act relu }\n"
              "blocks 1 { layers 1; width 4 } head { pool global; fc 2 } }")
    assert "se has `act` twice" in e.value.message


# ---- what each piece does ---------------------------------------------------------------------

def test_bn_eps_and_momentum_reach_every_batchnorm_fused_or_not(tmp_path):
    net = elaborate(unit_spec(tmp_path))
    for gm in (lower(net), lower(net, fused=False)):
        bns = {n: m for n, m in gm.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert (bns["stem.bn1"].eps, bns["stem.bn1"].momentum) == (0.001, 0.01)
        assert (bns["block1.g_s1_x1"].eps, bns["block1.g_s1_x1"].momentum) == (0.001, 0.01)
        assert (bns["block1.gb_s1_x1"].eps, bns["block1.gb_s1_x1"].momentum) == (1e-5, 0.1)


@pytest.mark.parametrize("training", [False, True])
def test_the_mbconv_block_equals_the_naive_interpreter(tmp_path, training):
    """Grouped first conv (W_01 is depthwise-sized), SE with silu/hardsigmoid, BN eps,
    shortcut none and droppath: the compiled module and the reference agree, forward and
    backward, with the same random draws."""
    net = elaborate(unit_spec(tmp_path, n=3))
    gm = lower(net).double().train(training)
    ref = NaiveNet(net, gm).train(training)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(3)
    y = gm(x)
    torch.manual_seed(3)
    torch.testing.assert_close(y, ref(x))
    if training:
        torch.manual_seed(3)
        g1 = torch.autograd.grad(gm(x).square().sum(), list(gm.parameters()))
        torch.manual_seed(3)
        g2 = torch.autograd.grad(ref(x).square().sum(), list(gm.parameters()))
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b)


def test_shortcut_none_adds_x0_only_where_its_shape_agrees(tmp_path):
    net = elaborate(unit_spec(tmp_path, n=3))
    b1, b2 = net.blocks
    assert (b1.c0, b1.width, b1.add_x0) == (8, 8, True)  # same shape: the residual is there
    assert (b2.c0, b2.width, b2.add_x0) == (12, 8, False)  # 12 -> 8: no residual
    code = lower(net).code
    assert "b1_x1_s1 = " in code and "b2_x1_s1 = " in code
    adds = [line.strip() for line in code.splitlines() if " + " in line]
    assert any(line.startswith("b2_x2_s1 = ") for line in adds)  # X_2 = unit(X_1) + X_1
    assert not any(line.startswith("b2_x1_s1 = ") for line in adds)  # X_1 = unit(X_0)
    assert any(line.startswith("b1_x1_s1 = ") for line in adds)  # 8 -> 8: X_0 added


def test_droppath_is_identity_in_eval_and_keeps_one_minus_p_scaled_in_training():
    from cliquegraph.units import DropPath
    x = torch.ones(20000, 3, 2, 2)
    m = DropPath(0.3)
    assert m.eval()(x) is x
    torch.manual_seed(0)
    y = m.train()(x)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.7).all(1)).all()  # whole samples
    kept = (per_sample[:, 0] != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.015  # 5 sigma of a binomial over 20000 samples
    assert abs(y.mean().item() - 1) < 0.03  # unbiased


def test_droppath_linear_rates_are_torchvisions_efficientnet_b0s():
    """torchvision's b0: unit u of 16 drops with 0.2 * u / 16; a unit without a residual
    (the first of a stage) runs no droppath at all."""
    net = elaborate(SPECS / "efficientnet.clq")
    rates = [op.for_layer(i).p for b in net.blocks for i in range(1, b.layers + 1)
             for op in b.unit.body if op.kind == "droppath"]
    assert rates == pytest.approx([0.2 * u / 16 for u in range(16)])
    gm = cliquegraph.build(net)
    drops = {n: m.p for n, m in gm.named_modules() if type(m).__name__ == "DropPath"}
    residual = [u for u, (b, i) in enumerate((b, i) for b in net.blocks
                                             for i in range(1, b.layers + 1)) if i > 1]
    assert sorted(drops.values()) == pytest.approx(sorted(0.2 * u / 16 for u in residual))


def test_a_grouped_first_conv_needs_one_input_per_update(tmp_path):
    chain = elaborate(unit_spec(tmp_path, n=3, expand="C"))
    # expand 1x1 C then the depthwise conv; W_01 of block 1 is the 1x1 over 8 channels
    assert count_params(chain) == sum(p.numel() for p in lower(chain).parameters())
    path = tmp_path / "dw.clq"
    path.write_text(unit_spec(tmp_path, n=3).read_text().replace(
        "      conv 1x1 2 * C\n      bn eps 0.001 momentum 0.01\n      silu\n", ""))
    net = elaborate(path)
    assert tuple(cliquegraph.build(net).block1.w_0_1.shape) == (8, 1, 3, 3)
    with pytest.raises(SpecError) as e:
        elaborate(_rewrite(path, "topology chain", "topology clique"))
    assert "grouped first conv, and X_2 reads several inputs" in e.value.message


def _rewrite(path, old, new):
    out = path.with_name(path.stem + "_2.clq")
    out.write_text(path.read_text().replace(old, new))
    return out


def test_a_unit_whose_body_depends_on_its_input_is_refused_only_where_a_layer_reads_both(
        tmp_path):
    elaborate(unit_spec(tmp_path, n=3, expand="2 * C"))  # chain: each layer reads one kind
    with pytest.raises(SpecError) as e:
        elaborate(unit_spec(tmp_path, n=3, topology="clique", stages=2, expand="2 * C",
                            name="c.clq"))
    assert "first conv makes" in e.value.message or "depends on its input" in e.value.message
    elaborate(unit_spec(tmp_path, n=3, topology="clique", stages=2, expand="2 * K",
                        name="k.clq"))


# ---- an EfficientNet stage as a clique block ---------------------------------------------------

def _small_efficientnet(tmp_path):
    spec = tmp_path / "efficientnet.clq"
    spec.write_text((SPECS / "efficientnet.clq").read_text().replace(
        "input [3, size, size]", "input [1, size, size]"))
    return spec


SMALL = ("size=32", "width_mult=0.25", "clique_stage=5", "classes=10")


def test_an_efficientnet_stage_made_a_clique_shares_its_w_ij_across_stages(tmp_path):
    net = elaborate(_small_efficientnet(tmp_path), dict(s.split("=") for s in SMALL))
    b5 = net.blocks[4]
    assert (b5.topology, b5.stages, b5.merge, b5.layers) == ("clique", 2, "add", 3)
    gm = cliquegraph.build(net).double()
    reads = {n.target: len(n.users) for n in gm.graph.nodes if n.op == "get_attr"}
    assert reads["block5.w_2_3"] == 2  # Stage I and Stage II
    assert reads["block5.w_0_1"] == 1  # X_0 is read in Stage I only
    from test_compiler import _untie
    untied, uses = _untie(gm)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    torch.manual_seed(0)
    gm(x).square().sum().backward()
    torch.manual_seed(0)
    untied(x).square().sum().backward()
    for target, copies in uses.items():
        total = sum(untied.get_parameter(c).grad for c in copies)
        torch.testing.assert_close(gm.get_parameter(target).grad, total)


def test_an_efficientnet_with_a_clique_stage_trains_on_digits(tmp_path, capsys):
    from test_zoo import _digits_run
    rows, last = _digits_run(tmp_path, _small_efficientnet(tmp_path), *SMALL)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert rows[-1]["test_acc"] > 0.25  # chance is 0.1
    assert "block5.w_3_1" in last["state_dict"]


@pytest.mark.parametrize("width_mult,params", [(0.35, 1_677_128), (0.5, 1_968_680),
                                               (0.75, 2_636_424), (1.4, 6_108_776)])
def test_width_mult_gives_torchvisions_mobilenet_v2(width_mult, params):
    """torchvision.models.mobilenet_v2(width_mult=...)'s parameter counts (torchvision 0.29):
    the widths rounded to multiples of 8 as it rounds them, the last conv widened past 1.0."""
    net = elaborate(SPECS / "mobilenet-v2.clq", {"width_mult": width_mult})
    assert count_params(net) == params
