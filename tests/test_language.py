"""The .clq language, feature by feature: what a spec says is what the IR holds.

Each test writes a small spec (or reads one of specs/) and checks the elaborated IR: params and
arithmetic, overrides, per-block lists, stems, feature/transit policies, stages and steps,
bottlenecks, BN modes, dropout, transitions, heads, topologies, comments, `if`, include and
extends; then the IR's invariants for every spec of specs/.
"""

import shutil
import textwrap

import networkx as nx
import pytest

from cliquegraph import SpecError, count_params, elaborate, fmt, parse, parse_file
from cliquegraph.parse import grammar_text, parse_value
from cliquegraph.values import Dims, Evaluator, Policy, Sym
from conftest import ROOT, SPECS


def write(folder, text, name="net.clq"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def net(tmp_path, *, params="", input="3x32x32", stem="conv 3x3 16", count="2",
        blocks="layers 3; width 4", transition="bn; relu; conv 1x1 C; pool avg 2",
        head="bn; relu; pool global; fc 10", overrides=None):
    """Elaborate a small network made of the given pieces."""
    text = (f"network n {{\n  {params}\n  input {input}\n  stem {{ {stem} }}\n"
            f"  blocks {count} {{ {blocks} }}\n  transition {{ {transition} }}\n"
            f"  head {{ {head} }}\n}}\n")
    return elaborate(write(tmp_path, text), overrides)


def value(text, **params):
    """The value of one expression, with `params` as the params in scope."""
    return Evaluator(params.__getitem__, "<test>", text)(parse_value(text))


# ---- params ----------------------------------------------------------------------------------

def test_params_of_every_type_have_their_defaults(tmp_path):
    n = net(tmp_path, params="""
        param i = 3
        param f = 0.25
        param b = true
        param s = dense
        param l = [1, 2, 3]
        param p = x0 + last
        param d = 3x3
        param e = 1e3""")
    assert n.param("i") == 3 and isinstance(n.param("i"), int)
    assert n.param("f") == 0.25
    assert n.param("b") is True
    assert n.param("s") == Sym("dense")
    assert n.param("l") == (1, 2, 3)
    assert n.param("p") == Policy(("x0", "last"))
    assert n.param("d") == Dims((3, 3))
    assert n.param("e") == 1000.0 and isinstance(n.param("e"), float)
    assert [name for name, _ in n.params] == ["i", "f", "b", "s", "l", "p", "d", "e"]


def test_a_param_may_use_a_param_declared_after_it(tmp_path):
    n = net(tmp_path, params="param w = 2 * k; param k = 3", blocks="layers 2; width w")
    assert n.param("w") == 6 and n.blocks[0].width == 6


@pytest.mark.parametrize("text,expected", [
    ("7 + 2", 9), ("7 - 2", 5), ("7 * 2", 14), ("7 / 2", 3.5), ("7 // 2", 3), ("7 % 3", 1),
    ("-7 // 2", -4), ("-7 % 3", 2), ("7.5 // 2", 3.0), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20),
    ("10 - 4 - 3", 3), ("2 * 3 // 4", 1), ("--3", 3), ("k * 2 + 1", 9),
    ("1 < 2", True), ("2 <= 2", True), ("3 > 4", False), ("3 >= 4", False), ("1 == 1.0", True),
    ("1 != 2", True), ("clique == clique", True), ("clique == dense", False),
    ("1 == true", False), ("[1, 2] == [1, 2]", True),
    ("true and false", False), ("true or false", True), ("not true", False),
    ("not 1 > 2", True), ("true or false and false", True), ("not false and false", False),
    ("false and 1 / 0 > 1", False), ("true or 1 / 0 > 1", True),  # and/or short-circuit
    ("if 1 < 2 then 10 else 20", 10), ("if k > 10 then 1 else 2", 2),
    ("if false then 1 else if true then 2 else 3", 2), ("(if true then 1 else 2) + 1", 2),
    ("floor(2.7)", 2), ("ceil(2.1)", 3), ("round(2.6)", 3), ("floor(C * 0.5)", 5),
    ("min(3, 1, 2)", 1), ("max([4, 9, 2])", 9), ("len([1, 2, 3])", 3), ("len([])", 0),
    ("[1, 2] + [3]", (1, 2, 3)), ("x0 + stage2", Policy(("x0", "stage2"))),
    ("none + x0", Policy(("x0",))), ("last", Policy(("last",))), ("3x32x32", Dims((3, 32, 32))),
    ("shared", Sym("shared")), ("[x0, 2x2, true]", (Policy(("x0",)), Dims((2, 2)), True)),
])
def test_arithmetic_and_logic(text, expected):
    got = value(text, k=4, C=11)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text", ["floor(2.7)", "ceil(2.1)", "round(2.6)", "len([1])",
                                  "7 // 2", "max(1, 2)"])
def test_whole_number_functions_give_integers(text):
    assert isinstance(value(text), int)


# ---- overrides ------------------------------------------------------------------------------

def test_overrides_as_text_or_python_values_are_one_mechanism():
    cifar = SPECS / "cliquenet-cifar.clq"
    for k in ("64", 64, 64.0, "2 * 32"):
        n = elaborate(cifar, {"k": k})
        assert [b.width for b in n.blocks] == [64, 64, 64]
        assert n.param("k") == 64
    assert [b.layers for b in elaborate(cifar, {"T": "15"}).blocks] == [5, 5, 5]
    assert [b.layers for b in elaborate(cifar, {"T": "k // 3", "k": 18}).blocks] == [2, 2, 2]
    for attention in (True, "true"):
        ops = elaborate(cifar, {"attention": attention}).transitions[0]
        assert [op.kind for op in ops] == ["bn", "relu", "conv", "dropout", "se", "avgpool"]
    assert isinstance(elaborate(cifar, {"dropout": 0}).param("dropout"), float)  # int given
    assert elaborate(cifar, {"feature": "stage1"}).blocks[0].feature == ("stage1",)
    assert elaborate(cifar, {"steps": 2}).blocks[0].steps == 2
    assert elaborate(cifar).param("k") == 36  # overrides do not stick


def test_a_list_override_gives_one_value_per_block():
    s3 = SPECS / "s3.clq"
    for widths in ("[8, 12, 16, 8]", [8, 12, 16, 8], (8, 12, 16, 8)):
        n = elaborate(s3, {"widths": widths})
        assert [b.width for b in n.blocks] == [8, 12, 16, 8]
        assert [b.bottleneck for b in n.blocks] == [8, 12, 16, 8]
    assert len(elaborate(s3, {"widths": "[8, 12]", "layers": "[2, 3]"}).blocks) == 2


def test_an_override_reaches_a_param_declared_by_the_parent():
    n = elaborate(SPECS / "random-block.clq", {"k": 12, "seed": 2})
    assert n.param("k") == 12 and n.blocks[0].width == 12
    assert "seed = 2" in n.blocks[0].topology


# ---- per-block lists ------------------------------------------------------------------------

def test_a_list_gives_one_value_per_block_and_a_scalar_is_broadcast(tmp_path):
    n = net(tmp_path, count="3", blocks="""
        layers [2, 3, 4]
        width 5
        topology [clique, dense, chain]
        stages [1, 2, 3]
        kernel [3, 1, 3x1]
        dropout [0, 0.1, 0.2]""")
    assert [b.layers for b in n.blocks] == [2, 3, 4]
    assert [b.width for b in n.blocks] == [5, 5, 5]
    assert [b.topology for b in n.blocks] == ["clique", "dense", "chain"]
    assert [b.graph.number_of_edges() for b in n.blocks] == [4, 6, 7]
    assert [b.stages for b in n.blocks] == [1, 2, 3]
    assert [b.kernel for b in n.blocks] == [(3, 3), (1, 1), (3, 1)]
    assert [b.dropout for b in n.blocks] == [0.0, 0.1, 0.2]


def test_the_block_count_may_come_from_the_lists(tmp_path):
    n = net(tmp_path, count="", blocks="layers [2, 3]; width [4, 6]")
    assert [(b.layers, b.width) for b in n.blocks] == [(2, 4), (3, 6)]
    n = net(tmp_path, count="len(widths)", params="param widths = [4, 6, 8]",
            blocks="layers 2; width widths")
    assert [b.width for b in n.blocks] == [4, 6, 8]


def test_a_list_of_the_wrong_length_is_refused(tmp_path):
    with pytest.raises(SpecError, match="width lists 2 values for 3 blocks"):
        net(tmp_path, count="3", blocks="layers 2; width [4, 8]")


# ---- stems ----------------------------------------------------------------------------------

def test_cifar_stem_is_one_3x3_conv_at_full_resolution():
    n = elaborate(SPECS / "cliquenet-cifar.clq")
    assert [op.kind for op in n.stem] == ["conv"]
    assert n.stem[0].kernel == (3, 3) and n.stem[0].padding == (1, 1)
    assert n.stem[0].out_shape == (64, 32, 32)
    assert [b.in_shape for b in n.blocks] == [(64, 32, 32), (144, 16, 16), (144, 8, 8)]


def test_imagenet_stem_takes_224_to_56():
    n = elaborate(SPECS / "s3.clq")
    assert [op.kind for op in n.stem] == ["conv", "bn", "relu", "maxpool"]
    conv, pool = n.stem[0], n.stem[3]
    assert (conv.kernel, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert conv.out_shape == (64, 112, 112)
    assert (pool.kernel, pool.stride, pool.padding) == ((3, 3), (2, 2), (1, 1))
    assert [b.in_shape[1:] for b in n.blocks] == [(56, 56), (28, 28), (14, 14), (7, 7)]


# ---- feature and transit policies -----------------------------------------------------------

@pytest.mark.parametrize("policy,sources,channels", [
    ("x0", ("x0",), 16), ("stage1", ("stage1",), 12), ("stage2", ("stage2",), 12),
    ("last", ("stage2",), 12), ("x0 + last", ("x0", "stage2"), 28),
    ("stage2 + x0", ("stage2", "x0"), 28), ("x0 + stage1 + stage2", ("x0", "stage1", "stage2"), 40),
    ("none + x0", ("x0",), 16),
])
def test_feature_and_transit_policies(tmp_path, policy, sources, channels):
    n = net(tmp_path, count="1", blocks=f"layers 3; width 4; stages 2; feature {policy}; "
            f"transit {policy}")
    b = n.blocks[0]
    assert b.feature == b.transit == sources
    assert b.feature_channels == b.transit_channels == channels
    assert n.head_scale[0][0].in_shape == (channels, 32, 32)


def test_last_means_the_last_stage(tmp_path):
    n = net(tmp_path, count="3", blocks="layers 2; width 4; stages [1, 2, 3]; feature last; "
            "transit last")
    assert [b.feature for b in n.blocks] == [("stage1",), ("stage2",), ("stage3",)]


def test_feature_none_keeps_a_block_out_of_the_head(tmp_path):
    n = net(tmp_path, count="3", blocks="layers 2; width 4; feature [none, x0 + last, last]")
    assert n.blocks[0].feature == ()
    assert n.scales == (2, 3)
    head_edges = sorted(u for u, v in n.graph.in_edges("head"))
    assert head_edges == ["block2", "block3"]


def test_transit_none_is_fine_for_the_last_block(tmp_path):
    n = net(tmp_path, count="2", blocks="layers 2; width 4; transit [last, none]")
    assert n.blocks[1].transit == ()


def test_default_policies_are_x0_plus_last_and_last(tmp_path):
    b = net(tmp_path, blocks="layers 2; width 4; stages 3").blocks[0]
    assert (b.feature, b.transit) == (("x0", "stage3"), ("stage3",))


# ---- stages, steps, bottleneck, bn, dropout -------------------------------------------------

def test_stages_and_partial_steps(tmp_path):
    b = net(tmp_path, blocks="layers 4; width 4; stages 1").blocks[0]
    assert (b.stages, b.steps, b.updates(1)) == (1, None, 4)
    b = net(tmp_path, blocks="layers 4; width 4; stages 3; steps 2").blocks[0]
    assert (b.stages, b.steps) == (3, 2)
    assert [b.updates(s) for s in (1, 2, 3)] == [4, 4, 2]
    assert net(tmp_path, blocks="layers 4; width 4; steps 4").blocks[0].steps is None
    assert net(tmp_path, blocks="layers 4; width 4; steps all").blocks[0].steps is None
    n = elaborate(SPECS / "cliquenet-cifar.clq", {"k": 64, "T": 15, "steps": 3})
    assert [(b.stages, b.steps) for b in n.blocks] == [(2, 3)] * 3


def test_a_bottleneck_makes_every_w_ij_a_1x1_to_the_mid_width(tmp_path):
    n = net(tmp_path, count="1", stem="conv 3x3 10", blocks="layers 3; width 4; bottleneck 8")
    b = n.blocks[0]
    assert b.bottleneck == 8 and b.kernel == (3, 3)
    for i, j, d in b.graph.edges(data=True):
        assert d["kernel"] == (1, 1)
        assert d["out_channels"] == 8
        assert d["in_channels"] == (10 if i == 0 else 4)
    for off in ("false", "none", "0"):
        b = net(tmp_path, count="1", blocks=f"layers 3; width 4; bottleneck {off}").blocks[0]
        assert b.bottleneck is None
        assert {d["kernel"] for _, _, d in b.graph.edges(data=True)} == {(3, 3)}


def test_paper_bottlenecks_cliquenet_k_and_densenet_4k():
    assert [b.bottleneck for b in elaborate(SPECS / "s0.clq").blocks] == [36, 64, 100, 80]
    assert [b.bottleneck for b in elaborate(SPECS / "densenet-121.clq").blocks] == [128] * 4
    cifar = elaborate(SPECS / "cliquenet-cifar.clq", {"bottleneck": True})
    assert [(b.layers, b.bottleneck) for b in cifar.blocks] == [(2, 36)] * 3


def test_bn_per_stage_or_shared(tmp_path):
    def params(bn, stages):
        n = net(tmp_path, count="1", blocks=f"layers 3; width 4; stages {stages}; bn {bn}")
        assert n.blocks[0].bn == bn
        return count_params(n)
    assert net(tmp_path, blocks="layers 3; width 4").blocks[0].bn == "per_stage"
    # a third stage reuses every W_ij: with shared BN it adds no parameter at all
    assert params("shared", 3) == params("shared", 2)
    assert params("per_stage", 3) > params("per_stage", 2)
    assert params("shared", 3) < params("per_stage", 3)


def test_the_stage_count_does_not_change_the_conv_weights():
    two = elaborate(SPECS / "cliquenet-cifar.clq")
    three = elaborate(SPECS / "cliquenet-stage3.clq")
    for a, b in zip(two.blocks, three.blocks):
        assert (a.stages, b.stages) == (2, 3)
        assert sorted(a.graph.edges(data=True)) == sorted(b.graph.edges(data=True))


def test_dropout_in_blocks_and_ops(tmp_path):
    n = net(tmp_path, blocks="layers 2; width 4; dropout 0.2",
            transition="bn; relu; conv 1x1 C; dropout 0.1; pool avg 2")
    assert [b.dropout for b in n.blocks] == [0.2, 0.2]
    assert n.transitions[0][3].kind == "dropout" and n.transitions[0][3].p == 0.1
    assert net(tmp_path).blocks[0].dropout == 0.0


# ---- transitions and heads ------------------------------------------------------------------

def test_transition_width_factor_theta():
    n = elaborate(SPECS / "densenet-cifar.clq", {"bc": True, "T": 96})
    assert n.param("theta") == 0.5
    for b, ops, nxt in zip(n.blocks, n.transitions, n.blocks[1:]):
        conv = ops[2]
        assert conv.kind == "conv" and conv.kernel == (1, 1)
        assert conv.in_shape[0] == b.transit_channels
        assert conv.out_shape[0] == b.transit_channels // 2 == nxt.in_shape[0]
    plain = elaborate(SPECS / "densenet-cifar.clq")  # theta 1: no compression
    assert [b.in_shape[0] for b in plain.blocks] == [16, 16 + 12 * 12, 16 + 24 * 12]


def test_transition_se_attention_and_pooling(tmp_path):
    n = net(tmp_path, stem="conv 3x3 8", blocks="layers 2; width 4",
            transition="bn; relu; conv 1x1 C; se reduction 2; pool max 3x3 stride 2 padding 1")
    conv, se, pool = n.transitions[0][2:]
    assert se.kind == "se" and se.hidden == conv.out_shape[0] // 2 == 4
    assert pool.kind == "maxpool" and pool.out_shape == (8, 16, 16)
    assert n.blocks[1].in_shape == (8, 16, 16)
    avg = net(tmp_path, transition="pool avg 2").transitions[0][0]
    assert avg.kind == "avgpool" and avg.out_shape[1:] == (16, 16)


def test_multi_scale_head_reads_every_block_feature_with_compression():
    n = elaborate(SPECS / "cliquenet-cifar.clq", {"compression": True})
    assert n.scales == (1, 2, 3)
    assert len(n.head_scale) == 3
    widths = []
    for b, ops in zip(n.blocks, n.head_scale):
        assert ops[0].in_shape == (b.feature_channels,) + b.in_shape[1:]
        conv = next(op for op in ops if op.kind == "conv")
        assert conv.out_shape[0] == b.feature_channels // 2
        assert ops[-1].kind == "gpool"
        widths.append(ops[-1].out_shape[0])
    assert n.head[-1].kind == "fc" and n.head[-1].in_shape == (sum(widths),)
    assert n.outputs == 10


def test_last_only_head_reads_the_last_block():
    n = elaborate(SPECS / "densenet-121.clq")
    assert n.scales == (4,)
    assert n.head_scale[0][0].in_shape[0] == n.blocks[-1].feature_channels == 1024
    assert n.head[-1].in_shape == (1024,) and n.outputs == 1000


def test_head_scales_may_list_blocks(tmp_path):
    n = net(tmp_path, count="3", head="scales [1, 3]; pool global; fc 10")
    assert n.scales == (1, 3)
    assert n.head[0].in_shape == (sum(n.blocks[s - 1].feature_channels for s in (1, 3)),)


# ---- topologies -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_a_clique_block_of_n_layers_owns_n_squared_w_ij(tmp_path, n):
    g = net(tmp_path, count="1", blocks=f"layers {n}; width 4; topology clique").blocks[0].graph
    assert g.number_of_edges() == n * n  # n from X_0, n(n-1) between layers
    assert all(g.has_edge(i, j) for i in range(1, n + 1) for j in range(1, n + 1) if i != j)
    assert not any(g.has_edge(i, 0) for i in range(n + 1))


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_a_dense_block_has_n_n_plus_1_over_2_edges_all_forward(tmp_path, n):
    g = net(tmp_path, count="1", blocks=f"layers {n}; width 4; topology dense").blocks[0].graph
    assert g.number_of_edges() == n * (n + 1) // 2
    assert all(i < j for i, j in g.edges())
    assert nx.is_directed_acyclic_graph(g)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_a_chain_has_2n_minus_1_edges_between_neighbours(tmp_path, n):
    g = net(tmp_path, count="1", blocks=f"layers {n}; width 4; topology chain").blocks[0].graph
    assert g.number_of_edges() == 2 * n - 1
    assert all(abs(i - j) == 1 for i, j in g.edges())


def test_an_explicit_edge_list_is_exactly_its_edges():
    g = elaborate(SPECS / "partial-clique.clq").blocks[0].graph
    assert set(g.edges()) == {(0, 1), (0, 3), (1, 2), (2, 1), (2, 3), (3, 4), (4, 3)}
    assert g.number_of_edges() == 7  # two `->` and three `<->`


def test_edge_endpoints_may_be_expressions(tmp_path):
    g = net(tmp_path, count="1", params="param a = 1",
            blocks="layers 3; width 4; topology edges { 0 -> a, a <-> a + 1, 2 * a -> 3, }"
            ).blocks[0].graph
    assert set(g.edges()) == {(0, 1), (1, 2), (2, 1), (2, 3)}


GENERATORS = ["watts_strogatz(k = 2, p = 0.5, seed = {})", "erdos_renyi(p = 0.4, seed = {})",
              "barabasi_albert(m = 2, seed = {})"]


@pytest.mark.parametrize("gen", GENERATORS)
def test_random_topologies_are_fixed_by_their_seed(tmp_path, gen):
    def edges(seed):
        b = net(tmp_path, count="1", blocks=f"layers 10; width 4; topology {gen.format(seed)}"
                ).blocks[0]
        return sorted(b.graph.edges())
    first = edges(1)
    assert edges(1) == first
    assert any(edges(seed) != first for seed in range(2, 8))
    assert all((0, j) in first for j in range(1, 11))  # X_0 feeds every layer
    assert all((j, i) in first for i, j in first if i != 0)  # each drawn edge is W_ij and W_ji


def test_random_block_spec_redraws_with_another_seed():
    one = elaborate(SPECS / "random-block.clq").blocks[0]
    assert one.topology == "watts_strogatz(k = 2, p = 0.3, seed = 1)"
    assert one.layers == 8 and one.graph.number_of_edges() == 8 + 2 * 8
    others = [sorted(elaborate(SPECS / "random-block.clq", {"seed": s}).blocks[0].graph.edges())
              for s in range(2, 6)]
    assert any(o != sorted(one.graph.edges()) for o in others)


def test_edge_attributes_kernel_and_channels(tmp_path):
    b = net(tmp_path, count="1", stem="conv 3x3 10",
            blocks="layers 3; width 4; kernel 5; topology clique").blocks[0]
    for i, j, d in b.graph.edges(data=True):
        assert d["kernel"] == (5, 5)
        assert d["in_channels"] == b.graph.nodes[i]["channels"] == (10 if i == 0 else 4)
        assert d["out_channels"] == 4
    assert b.graph.nodes[0]["channels"] == 10
    assert net(tmp_path, blocks="layers 2; width 4; kernel 1x3").blocks[0].kernel == (1, 3)


# ---- comments, if, include, extends ---------------------------------------------------------

COMMENTED = """\
# a header
network n {  # opens
  param k = 4  # width
  # between
  input 3x32x32
  blocks 1 {
    layers 2 # two
    width k  # ## not a second comment
    topology edges { 0 -> 1,  # first
                     1 <-> 2 }
  }
  head { pool global; fc 10 }  # end
}
# trailer
"""


def test_comments_change_nothing(tmp_path):
    plain = "\n".join(line.split("#")[0] for line in COMMENTED.split("\n"))
    assert parse(COMMENTED) == parse(plain)
    a = elaborate(write(tmp_path, COMMENTED, "a.clq"))
    b = elaborate(write(tmp_path, plain, "b.clq"))
    assert a.blocks == b.blocks and sorted(a.blocks[0].graph.edges()) == [(0, 1), (1, 2), (2, 1)]
    assert [t for _, _, t in parse(COMMENTED).comments][:3] == ["# a header", "# opens",
                                                                 "# width"]


IFS = """\
network n {
  param big = false
  if big {
    input 3x64x64
  } else {
    input 3x32x32
  }
  stem { if big { conv 3x3 32 } else { conv 3x3 16 } }
  blocks 2 {
    width 4
    if big { layers 4; topology dense } else { layers 2 }
    if not big { stages 1 }
  }
  transition { bn; if big { pool max 2 } else { pool avg 2 } }
  head { pool global; if big { fc 100 } }
}
"""


def test_if_else_at_network_block_and_op_level(tmp_path):
    path = write(tmp_path, IFS)
    small, big = elaborate(path), elaborate(path, {"big": True})
    assert small.input_shape == (3, 32, 32) and big.input_shape == (3, 64, 64)
    assert small.stem[0].out_shape[0] == 16 and big.stem[0].out_shape[0] == 32
    assert [(b.layers, b.topology, b.stages) for b in small.blocks] == [(2, "clique", 1)] * 2
    assert [(b.layers, b.topology, b.stages) for b in big.blocks] == [(4, "dense", 2)] * 2
    assert small.transitions[0][1].kind == "avgpool" and big.transitions[0][1].kind == "maxpool"
    assert small.head == () and big.head[0].kind == "fc" and big.outputs == 100


def test_include_and_extends_child_params_override_parent(tmp_path):
    n = elaborate(SPECS / "cliquenet-stage3.clq")
    assert n.name == "cliquenet_stage3" and n.param("stages") == 3
    assert [b.stages for b in n.blocks] == [3, 3, 3]
    assert n.param("k") == 36  # the rest comes from the parent
    s0 = elaborate(SPECS / "s0.clq")
    assert [b.width for b in s0.blocks] == [36, 64, 100, 80]
    assert [b.layers for b in s0.blocks] == [5, 6, 6, 6]
    # a parent's expressions see the child's params: T / 3 with the child's T = 24
    assert [b.layers for b in elaborate(SPECS / "random-block.clq").blocks] == [8, 8, 8]


def test_child_blocks_attributes_merge_over_the_parents():
    n = elaborate(SPECS / "partial-clique.clq")
    parent = elaborate(SPECS / "cliquenet-cifar.clq")
    assert len(n.blocks) == 3  # the count stays the parent's
    for b, p in zip(n.blocks, parent.blocks):
        assert b.layers == 4 and b.topology == "edges"  # from the child
        assert (b.width, b.stages, b.feature, b.transit, b.dropout) == \
            (p.width, p.stages, p.feature, p.transit, p.dropout)  # from the parent
    assert n.transitions == parent.transitions and n.head == parent.head


def test_extends_in_one_file_builds_the_last_network_and_sections_replace(tmp_path):
    path = write(tmp_path, """\
        network base {
          param k = 4
          input 3x16x16
          blocks 1 { layers 2; width k }
          head { pool global; fc 10 }
        }
        network child extends base {
          param k = 6
          head { bn; pool global; fc 5 }
        }
        """)
    n = elaborate(path)
    assert n.name == "child" and n.blocks[0].width == 6
    assert [op.kind for op in n.head_scale[0]] == ["bn", "gpool"] and n.outputs == 5


def test_includes_are_relative_to_the_including_file_and_read_once(tmp_path):
    write(tmp_path, """\
        network base {
          param k = 4
          input 3x16x16
          blocks 1 { layers 2; width k }
          head { pool global; fc 10 }
        }
        """, "lib/base.clq")
    write(tmp_path, 'include "base.clq"\n', "lib/a.clq")
    write(tmp_path, 'include "base.clq"\n', "lib/b.clq")
    main = write(tmp_path, 'include "lib/a.clq"\ninclude "lib/b.clq"\n'
                 "network top extends base { param k = 5 }\n", "top.clq")
    assert elaborate(main).blocks[0].width == 5  # base.clq reached twice, read once


# ---- regressions: fmt ----------------------------------------------------------------------

def test_fmt_keeps_each_comment_in_its_branch_of_if_else():
    text = textwrap.dedent("""\
        network n {
          blocks 1 {
            if c {
              layers 1  # then
              # end of then
            } else {  # on else
              # start of else
              layers 2
            }  # after
          }
        }
        """)
    assert fmt(parse(text)) == text
    compact = "network n { if c { param a = 1 } else { param a = 2 } }\n"
    once = fmt(parse(compact))
    assert fmt(parse(once)) == once


def test_fmt_keeps_a_param_named_like_a_keyword_apart_from_the_keyword():
    text = ("network n { param layers = 2\n stem { conv 3x3 (layers); conv 3x3 (layers) * 2 "
            "stride (2); pool avg (stride) } }")
    spec = parse(text)
    out = fmt(spec)
    assert parse(out) == spec
    assert "conv 3x3 (layers)\n" in out and "pool avg (stride)" in out


def test_fmt_of_a_conv_whose_kernel_is_a_name_and_width_starts_with_a_parenthesis():
    spec = parse("network n { stem { conv (k) (C + 1) // 2 } }")
    assert parse(fmt(spec)) == spec
    assert "conv (k) (C + 1) // 2" in fmt(spec)


def test_lines_are_counted_as_lark_counts_them(tmp_path):
    # a form feed or a lone \r inside a comment does not end a line
    text = "network n {  # a\x0cb\r c\n  param k = kk\n}\n"
    spec = parse(text)
    assert [t for _, _, t in spec.comments] == ["# a\x0cb\r c"]
    assert fmt(spec).startswith("network n {  # a\x0cb\r c\n")
    path = tmp_path / "ff.clq"
    path.write_bytes(text.encode())
    with pytest.raises(SpecError) as info:
        elaborate(path)
    assert info.value.line == 2 and info.value.source_line == "  param k = kk"


# ---- the grammar and the IR of every spec ---------------------------------------------------

def test_the_packaged_grammar_is_grammars_clq_lark():
    assert grammar_text() == (ROOT / "grammars" / "clq.lark").read_text(encoding="utf-8")


ALL = sorted(SPECS.glob("*.clq"))


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_ir_invariants_of_every_spec(path):
    n = elaborate(path)
    counts = {"clique": lambda k: k * k, "dense": lambda k: k * (k + 1) // 2,
              "chain": lambda k: 2 * k - 1}
    shape = n.stem[-1].out_shape if n.stem else n.input_shape
    for i, b in enumerate(n.blocks):
        g = b.graph
        assert b.index == i + 1
        assert b.in_shape == shape
        assert sorted(g.nodes) == list(range(b.layers + 1))
        assert g.nodes[0]["channels"] == b.c0
        if b.topology in counts:
            assert g.number_of_edges() == counts[b.topology](b.layers)
        for u, v, d in g.edges(data=True):
            assert v != 0 and u != v
            first = b.unit_of([u]).first  # W_uv is a slice of it (grouped: per group)
            if first is None:  # a unit that starts with branches: the edge has no W_uv
                assert (d["kernel"], d["in_channels"], d["out_channels"]) == (None, 0, 0)
                continue
            assert d["in_channels"] == g.nodes[u]["channels"] // first.groups
            assert d["out_channels"] == first.out_shape[0]
            assert d["kernel"] == first.kernel
        for j in range(1, b.layers + 1):  # every layer has a Stage-I input
            assert any(u < j for u in g.predecessors(j))
        if i < len(n.transitions):
            ops, t_in = n.transitions[i], (b.transit_channels,) + b.hw
            assert not ops or ops[0].in_shape == t_in
            shape = ops[-1].out_shape if ops else t_in
    assert len(n.head_scale) == len(n.scales) >= 1
    assert all(n.blocks[s - 1].feature for s in n.scales)
    assert nx.is_directed_acyclic_graph(n.graph)
    assert list(nx.topological_sort(n.graph))[0] == "input"
    assert all(nx.has_path(n.graph, "input", node) for node in n.graph)


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_every_spec_survives_a_copy_to_another_folder(tmp_path, path):
    for p in ALL:
        shutil.copy(p, tmp_path / p.name)
    assert elaborate(tmp_path / path.name).blocks == elaborate(path).blocks
    assert parse_file(tmp_path / path.name) == parse_file(path)
