"""fuse.py: the plain lowering and the fused one are the same network (outputs, gradients,
running statistics, state_dict), and the pass fuses exactly the chains `match` accepts, which
the memory estimate reads too."""

import copy

import torch
from hypothesis import given, settings, strategies as st

from cliquegraph import build, elaborate, estimate, units
from cliquegraph.fuse import CONV_UNIT, POOL_UNIT, fuse, match
from cliquegraph.lower import lower
from test_compiler import _randomise_bn, block_configs, tiny_spec


def _units(gm):
    return [m for m in gm.modules() if isinstance(m, (units.BNReLUConv, units.BNReLUPool))]


def _step(gm, x, seed=7):
    torch.manual_seed(seed)  # the same dropout masks in both forms
    x = x.detach().requires_grad_(True)
    out = gm(x)
    params = dict(gm.named_parameters())
    grads = torch.autograd.grad(out.square().sum(), [x, *(params[k] for k in sorted(params))],
                                allow_unused=True)
    return out, grads


@settings(max_examples=25, deadline=None)
@given(cfg=block_configs(), memory_efficient=st.booleans())
def test_fusing_changes_nodes_not_the_network(tmp_path_factory, cfg, memory_efficient):
    net = elaborate(tiny_spec(tmp_path_factory.mktemp("spec"), **cfg))
    plain = lower(net, fused=False).double()
    _randomise_bn(plain)
    fused = fuse(copy.deepcopy(plain), memory_efficient=memory_efficient).train()
    assert not _units(plain) and _units(fused)
    assert sorted(fused.state_dict()) == sorted(plain.state_dict())
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (out_p, grads_p), (out_f, grads_f) = _step(plain.train(), x), _step(fused, x)
    torch.testing.assert_close(out_f, out_p, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_f, grads_p):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    plain_state = plain.state_dict()
    for k, a in fused.state_dict().items():
        torch.testing.assert_close(a, plain_state[k], msg=k)  # running statistics alike
    fused.eval(), plain.eval()
    torch.testing.assert_close(fused(x), plain(x))


def test_every_update_and_the_bn_relu_chains_become_one_unit_each(tmp_path):
    net = elaborate(tiny_spec(tmp_path, n=3, dropout="dropout 0.2", tdropout="dropout 0.2",
                              bottleneck="bottleneck 4"))
    gm = build(net)
    calls = [n for n in gm.graph.nodes if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), units.BNReLUConv)]
    # per block: 3 layers x 2 stages, two units each (bottleneck); one per transition
    assert len(calls) == 2 * 3 * 2 * 2 + 1
    assert "torch.relu" not in gm.code and "dropout" not in gm.get_submodule("block1")._modules
    head = [n for n in gm.graph.nodes if n.meta.get("unit") == POOL_UNIT]
    assert len(head) == 2  # bn relu pool global of each scale
    # the drop after the conv is in the unit, with its p
    assert {m.dropout for m in _units(gm) if isinstance(m, units.BNReLUConv)} == {0.2}


def test_a_shared_bn_is_fused_at_every_call(tmp_path):
    gm = build(elaborate(tiny_spec(tmp_path, n=3, stages=4, bn="shared")))
    loop = gm.get_submodule("block1.g_loop_x2")
    assert isinstance(loop, units.BNReLUConv)
    assert sum(n.target == "block1.g_loop_x2" for n in gm.graph.nodes) == 3  # stages 2..4


def test_a_chain_match_refuses_runs_plain_and_the_estimate_agrees(tmp_path):
    """`bn silu conv` and a strided conv are not the units' chains: both stay plain ops, and
    the memory estimate, which asks the same `match`, counts them as plain ops."""
    spec = """network t {
      input 3x8x8
      stem { conv 3x3 4 }
      blocks 1 { layers 2; width 3 }
      head { bn; ACT; conv 1x1 4; bn; relu; conv 3x3 4 stride 2; bn; relu; pool global; fc 5 }
    }"""
    nets = {}
    for act in ("silu", "relu"):
        (tmp_path / f"{act}.clq").write_text(spec.replace("ACT", act))
        nets[act] = elaborate(tmp_path / f"{act}.clq")
    net = nets["silu"]
    head = net.head_scale[0]
    assert match(head[0:4]) is None and match(head[3:7]) is None
    assert match(head[6:9]).unit == POOL_UNIT
    gm = build(net)
    fused_heads = [n.target for n in gm.graph.nodes if n.meta.get("unit")
                   and n.target.startswith("head")]
    assert fused_heads == ["head1.bn6"]
    plain = lower(net, fused=False)
    plain.load_state_dict(gm.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm.eval()(x), plain.eval()(x))
    # the estimate walks the same ops: the plain BN-SiLU-conv keeps its BN's and SiLU's
    # inputs for backward, where BN-ReLU-conv as one unit keeps nothing of its own
    assert match(nets["relu"].head_scale[0][0:4]).unit == CONV_UNIT
    silu, relu = (estimate.estimate_memory(nets[a], batch=8) for a in ("silu", "relu"))
    assert silu.activations > relu.activations


def test_match_reads_ir_ops():
    from cliquegraph.ops import node as Op
    s = (8, 4, 4)
    bn, relu = Op("bn", s, s), Op("relu", s, s)
    conv = Op("conv", s, s, kernel=(3, 3), padding=(1, 1))
    assert match([bn, relu, conv]) == match([bn, relu, conv, relu])
    m = match([bn, relu, conv, Op("dropout", s, s, p=0.5)])
    assert (m.unit, m.length, m.padding, m.p) == (CONV_UNIT, 4, (1, 1), 0.5)
    assert match([bn, relu, Op("conv", s, s, bias=True)]) is None
    assert match([Op("bn", (8,), (8,)), Op("relu", (8,), (8,)), Op("fc", (8,), (2,))]) is None
