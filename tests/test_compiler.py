"""The compiled module is the paper's network: Eq. (1) exactly (against a naive interpreter),
weights W_ij shared across stages, the paper's parameter counts and FLOPs, the original
implementation's weights and logits, and an ordinary GraphModule (save, compile, export)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, strategies as st

import cliquegraph
from cliquegraph import checkpoint, count_params, elaborate
from cliquegraph.lower import lower
from cliquegraph.original import OriginalNet
from cliquegraph.reference import NaiveNet
from cliquegraph.schedule import schedule, table
from cliquegraph.summary import count_flops
from conftest import ROOT, SPECS

TINY = """
network tiny {{
  input 3x8x8
  stem {{
    conv 3x3 {c0}
  }}
  blocks 2 {{
    layers {n}
    width {k}
    topology {topology}
    stages {stages}
    steps {steps}
    feature {feature}
    transit {transit}
    bn {bn}
    {bottleneck}
    {dropout}
    {unit}
  }}
  transition {{
    bn
    relu
    conv 1x1 C
    {tdropout}
    {attention}
    pool avg 2
  }}
  head {{
    scales {scales}
    {compression}
    bn
    relu
    pool global
    fc 5
  }}
}}
"""


def tiny_spec(tmp_path, name="tiny.clq", **kw):
    fields = dict(c0=4, n=3, k=3, topology="clique", stages=2, steps="all",
                  feature="x0 + last", transit="last", bn="per_stage", bottleneck="",
                  attention="", scales="all", compression="", dropout="", tdropout="", unit="")
    fields.update(kw)
    path = tmp_path / name
    path.write_text(TINY.format(**fields))
    return path


# units written in the spec (besides the default BN-ReLU-conv [bottleneck] one): residual with
# a conv+bn projection of X_0, SE or CBAM inside a clique's unit, pre-activation with the
# projection reading the pre-activated X_0
UNITS = ["",
         "merge add; unit { conv 3x3 K; bn; relu; conv 3x3 K; bn }; post { relu }",
         "merge add; unit { conv 1x1 K + 1; bn; relu; conv 3x3 C; bn; relu; conv 1x1 K; bn; "
         "se reduction 2 }; post { relu }",
         "unit { bn; relu; conv 3x3 K; cbam reduction 2 }",
         "merge add; unit { bn; relu; conv 3x3 K; bn; relu; conv 3x3 K; cbam reduction 1 }; "
         "shortcut { conv 1x1 K }; shortcut_from pre; post { dropout 0.2 }",
         # an EfficientNet/MobileNet v3 unit: expansion, depthwise conv, SE with its own
         # activation and gate, linear projection, stochastic depth; X_0 (4 channels, the
         # layers 1-3) is added nowhere
         "merge add; unit { conv 1x1 2 * K; bn eps 0.001 momentum 0.01; silu; "
         "conv 3x3 C groups C; bn; hardswish; se hidden 2 act silu gate hardsigmoid; "
         "conv 1x1 K; bn; droppath 0.2 linear }; shortcut none"]


@st.composite
def block_configs(draw):
    n = draw(st.integers(1, 4))
    stages = draw(st.integers(1, 3))
    steps = draw(st.integers(0, n)) if stages > 1 else n
    topology = draw(st.sampled_from(["clique", "dense", "chain", "edges", "watts"]))
    if topology == "edges":  # a random partial clique: every layer keeps a Stage-I input
        edges = [f"{draw(st.integers(0, j - 1))} -> {j}" for j in range(1, n + 1)]
        pairs = [(i, j) for i in range(1, n + 1) for j in range(1, n + 1) if i != j]
        extra = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) \
            if pairs else []
        edges += [f"{i} -> {j}" for i, j in extra if f"{i} -> {j}" not in edges]
        topology = "edges { " + ", ".join(edges) + " }"
    elif topology == "watts":
        topology = (f"watts_strogatz(k = 1, p = 0.5, seed = {draw(st.integers(0, 9))})"
                    if n >= 2 else "clique")
    sources = ["x0"] + [f"stage{s}" for s in range(1, stages + 1)]
    feature = draw(st.lists(st.sampled_from(sources), unique=True, min_size=1, max_size=3))
    transit = draw(st.lists(st.sampled_from(sources[1:]), unique=True, min_size=1, max_size=2))
    drop = draw(st.sampled_from(["", "dropout 0.3"]))
    unit = draw(st.sampled_from(UNITS))
    return dict(n=n, k=draw(st.integers(1, 3)), stages=stages, steps=steps, topology=topology,
                dropout="" if unit else drop, tdropout=drop, unit=unit,
                feature=" + ".join(feature), transit=" + ".join(transit),
                bn=draw(st.sampled_from(["per_stage", "shared"])),
                bottleneck="" if unit else draw(st.sampled_from(["", "bottleneck 2",
                                                                  "bottleneck 5"])),
                attention=draw(st.sampled_from(["", "se reduction 2"])),
                scales=draw(st.sampled_from(["all", "last", "[1]"])),
                compression=draw(st.sampled_from(["", "bn relu conv 1x1 max(1, C // 2)"])))


def _randomise_bn(gm):
    """Non-trivial BN affine params and running stats, so a wrong channel order shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in gm.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
            elif t.dim() == 1 and t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)


LOWERINGS = [{}, {"memory_efficient": True}, {"channels_last": False}]


@given(cfg=block_configs(), training=st.booleans(), options=st.sampled_from(LOWERINGS))
def test_compiled_module_equals_the_naive_interpreter_of_eq1(tmp_path_factory, cfg, training,
                                                            options):
    path = tiny_spec(tmp_path_factory.mktemp("spec"), **cfg)
    net = elaborate(path)
    gm = lower(net, **options).double()
    _randomise_bn(gm)
    ref = NaiveNet(net, gm)
    gm.train(training)
    ref.train(training)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def run(module, x):  # one seed per pass: dropout draws the same mask in both forms
        torch.manual_seed(7)
        return module(x)

    torch.testing.assert_close(run(gm, x), run(ref, x), rtol=1e-5, atol=1e-5)
    if training:  # the same gradients, and the same running statistics after the step
        x.requires_grad_(True)
        # (a last block whose feature is x0 alone leaves its layers unused: no gradient)
        grads = torch.autograd.grad(run(gm, x).square().sum(), [x, *gm.parameters()],
                                    allow_unused=True)
        x2 = x.detach().requires_grad_(True)
        ref_grads = torch.autograd.grad(run(ref, x2).square().sum(), [x2, *gm.parameters()],
                                        allow_unused=True)
        for a, b in zip(grads, ref_grads):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_table1_is_the_schedule_of_a_five_layer_clique(tmp_path):
    net = elaborate(tiny_spec(tmp_path, n=5))
    stage2 = [u for u in schedule(net.blocks[0]).updates if u.stage == 2]
    assert [u.inputs for u in stage2] == [
        ((2, 1), (3, 1), (4, 1), (5, 1)),
        ((3, 1), (4, 1), (5, 1), (1, 2)),
        ((4, 1), (5, 1), (1, 2), (2, 2)),
        ((5, 1), (1, 2), (2, 2), (3, 2)),
        ((1, 2), (2, 2), (3, 2), (4, 2))]
    assert "X_3^(2) <- {X_4^(1), X_5^(1), X_1^(2), X_2^(2)}" in table(net.blocks[0])
    # the generated code reads the same way
    code = lower(net).code
    assert ("b1_x3_s2 = self.block1.g_s2_x3(b1_w_x3_s2, b1_x4_s1, b1_x5_s1, b1_x1_s2, b1_x2_s2)"
            in code)
    assert "b1_w_x3_s2 = torch.cat([b1_w_4_3, b1_w_5_3, b1_w_1_3, b1_w_2_3], 1)" in code


def _conv_weights(gm, block=1):
    return {n: p for n, p in gm.named_parameters() if n.startswith(f"block{block}.w")}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_a_clique_block_of_n_layers_owns_n_squared_conv_weights(tmp_path, n):
    gm = lower(elaborate(tiny_spec(tmp_path, n=n)))
    assert len(_conv_weights(gm)) == n * n
    gm = lower(elaborate(tiny_spec(tmp_path, n=n, bottleneck="bottleneck 4")))
    assert len(_conv_weights(gm)) == n * n + n  # plus one 3x3 per layer, shared by stages


@pytest.mark.parametrize("n", [1, 3, 6])
def test_a_dense_block_owns_n_n_plus_1_over_2(tmp_path, n):
    gm = lower(elaborate(tiny_spec(tmp_path, n=n, topology="dense", stages=1,
                                   feature="x0 + stage1", transit="stage1")))
    assert len(_conv_weights(gm)) == n * (n + 1) // 2


def test_more_stages_add_flops_and_batchnorms_but_never_a_conv_weight(tmp_path):
    nets = [elaborate(tiny_spec(tmp_path, name=f"s{s}.clq", stages=s, n=4)) for s in (2, 3, 4)]
    gms = [lower(n) for n in nets]
    shapes = [{k: tuple(v.shape) for k, v in _conv_weights(g).items()} for g in gms]
    assert all(s == shapes[0] for s in shapes) and len(shapes[0]) == 16
    params = [sum(p.numel() for p in g.parameters()) for g in gms]
    flops = [sum(count_flops(g, n.input_shape).values()) for g, n in zip(gms, nets)]
    assert params == sorted(params) and len(set(params)) == 3  # only BNs grow
    assert flops == sorted(flops) and len(set(flops)) == 3


def test_stage_one_owns_only_the_weights_it_reads(tmp_path):
    # with one stage a clique's feedback edges W_ij (i > j) are never read: not owned
    net = elaborate(tiny_spec(tmp_path, stages=1, n=4, feature="x0 + stage1", transit="stage1"))
    gm = lower(net)
    assert len(_conv_weights(gm)) == 4 * 5 // 2
    assert sum(p.numel() for p in gm.parameters()) == count_params(net)


def _untie(gm):
    """A copy of gm where every use of a W_ij gets its own parameter (same initial value)."""
    import copy
    untied = copy.deepcopy(gm)
    g = untied.graph
    uses = {}
    for node in list(g.nodes):
        if node.op == "get_attr" and node.target.rsplit(".", 1)[1].startswith("w"):
            owner, leaf = node.target.rsplit(".", 1)
            for u, user in enumerate(list(node.users)):
                name = f"{leaf}__use{u}"
                untied.get_submodule(owner).register_parameter(
                    name, torch.nn.Parameter(untied.get_parameter(node.target).detach().clone()))
                with g.inserting_before(user):
                    copy_node = g.get_attr(f"{owner}.{name}")
                user.replace_input_with(node, copy_node)
                uses.setdefault(node.target, []).append(f"{owner}.{name}")
            g.erase_node(node)
    g.lint()
    untied.recompile()
    return untied, uses


@pytest.mark.parametrize("unit", [dict(bottleneck="bottleneck 3"), dict(unit=UNITS[2]),
                                  dict(unit=UNITS[3]), dict(unit=UNITS[4]),
                                  dict(unit=UNITS[5])])
def test_each_w_ij_gradient_is_the_sum_of_its_per_stage_contributions(tmp_path, unit):
    """Each W_ij, and each later conv of a layer's unit (wb_j ...), is one parameter read by
    every stage: its gradient is the sum of what each reading contributes. Residual units
    (merge add), SE and CBAM inside a clique's units, and an MBConv unit included."""
    net = elaborate(tiny_spec(tmp_path, n=4, stages=3, **unit))
    gm = lower(net).double()
    untied, uses = _untie(gm)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(0)  # the same dropout masks in both
    gm(x).square().sum().backward()
    torch.manual_seed(0)
    untied(x).square().sum().backward()
    shared = 0
    for target, copies in uses.items():
        total = sum(untied.get_parameter(c).grad for c in copies)
        torch.testing.assert_close(gm.get_parameter(target).grad, total)
        shared += len(copies) > 1
    assert shared > 0  # some weights really are read by several stages


@pytest.mark.parametrize("name", [p.stem for p in sorted(SPECS.glob("*.clq"))])
def test_module_parameters_equal_the_ir_count(name):
    net = elaborate(SPECS / f"{name}.clq")
    gm = lower(net)
    assert sum(p.numel() for p in gm.parameters()) == count_params(net)


# (overrides, the paper's FLOPs) for the CIFAR rows of Table 4
FLOPS = [
    ("cliquenet-cifar", {}, 0.91e9), ("cliquenet-cifar", {"k": 64, "T": 15}, 4.21e9),
    ("cliquenet-cifar", {"k": 80, "T": 15}, 6.45e9), ("cliquenet-cifar", {"k": 80, "T": 18}, 9.45e9),
    ("cliquenet-cifar", {"attention": True}, 0.91e9),
    ("cliquenet-cifar", {"compression": True}, 0.98e9),
    ("cliquenet-cifar", {"attention": True, "compression": True}, 0.98e9),
    ("cliquenet-cifar", {"k": 80, "T": 15, "attention": True, "compression": True}, 6.88e9),
    ("densenet-cifar", {}, 0.53e9), ("densenet-cifar", {"T": 96}, 3.54e9),
    ("densenet-cifar", {"k": 24, "T": 96}, 13.78e9),
    ("densenet-cifar", {"bc": True, "T": 96}, 0.58e9),
    ("densenet-cifar", {"bc": True, "k": 24, "T": 246}, 10.84e9),
]


@pytest.mark.parametrize("spec,overrides,paper", FLOPS)
def test_flops_within_4_percent_of_table4(spec, overrides, paper):
    net = elaborate(SPECS / f"{spec}.clq", overrides)
    flops = sum(count_flops(lower(net), net.input_shape).values())
    assert abs(flops / paper - 1) < 0.04


def test_the_abc_row_follows_the_original_structure_not_the_table():
    # k=150, T=30, A+B+C: 5 bottleneck layers per block as the original code builds it gives
    # 10.48M parameters (Table 4 prints 10.02M and 8.49G FLOPs; PAPER.md: match the structure)
    net = elaborate(SPECS / "cliquenet-cifar.clq",
                    {"k": 150, "T": 30, "attention": True, "bottleneck": True, "compression": True})
    assert [b.layers for b in net.blocks] == [5, 5, 5]
    assert count_params(net) == 10_480_938


def _original_s3_state_dict():
    m = OriginalNet([40, 80, 160, 160], [6, 6, 6, 6])
    _randomise_bn(m)
    return m


def test_original_net_has_the_layout_of_the_original_s3():
    # keys and shapes of the original PyTorch implementation's S3 (from the project's shared/)
    ref = json.loads((ROOT / "tests" / "data" / "original-s3-state-dict.json").read_text())
    sd = OriginalNet([40, 80, 160, 160], [6, 6, 6, 6]).state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == ref["state_dict"]
    assert sum(v.numel() for k, v in sd.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == ref["params"]


def test_from_original_gives_the_original_logits_for_s3():
    torch.manual_seed(0)
    orig = _original_s3_state_dict().eval()
    gm = cliquegraph.from_original(orig.state_dict(), SPECS / "s3.clq").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), orig(x), rtol=1e-4, atol=1e-4)


def test_from_original_refuses_another_spec_naming_the_key():
    sd = OriginalNet([8, 8, 8, 8], [2, 2, 2, 2]).state_dict()
    with pytest.raises(checkpoint.CheckpointError, match="list_block.0.conv_param"):
        cliquegraph.from_original(sd, SPECS / "s3.clq")


def test_save_round_trips(tmp_path):
    spec = tiny_spec(tmp_path)
    out = tmp_path / "m.pt"
    r = subprocess.run([sys.executable, "-m", "cliquegraph", "compile", str(spec), "--set",
                        "x=1", "--save", str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and "no param 'x'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "cliquegraph", "compile", str(spec), "--save",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    obj = torch.load(out, weights_only=True)
    assert obj["format"] == "cliquegraph/1" and "network tiny" in obj["spec_text"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600
    gm, net, _ = checkpoint.load_module(out)
    for key, value in obj["state_dict"].items():
        torch.testing.assert_close(gm.state_dict()[key], value)
    spec.write_text("garbage")  # the checkpoint carries its own spec text
    gm2, _, _ = checkpoint.load_module(out)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm.eval()(x), gm2.eval()(x))


def test_compile_summary_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cliquegraph", "compile",
                        str(SPECS / "cliquenet-cifar.clq"), "--summary", "json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 935_994 and abs(out["flops"] / 0.91e9 - 1) < 0.01
    assert [b["block"] for b in out["blocks"]] == [1, 2, 3]
    assert sum(b["params"] for b in out["blocks"]) < out["params"]


def test_autocast_training_takes_the_plain_ops(tmp_path):
    gm = lower(elaborate(tiny_spec(tmp_path, n=2, k=2)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gm(torch.randn(2, 3, 8, 8))
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16
    assert all(p.grad is not None for n, p in gm.named_parameters() if ".w_" in n)


def test_torch_compile_runs_on_cpu(tmp_path):
    gm = lower(elaborate(tiny_spec(tmp_path, n=2, k=2))).eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(gm)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), gm(x), rtol=1e-4, atol=1e-4)


def test_torch_export_and_onnx(tmp_path):
    gm = lower(elaborate(tiny_spec(tmp_path, n=2, k=2))).eval()
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(gm, (x,))
    torch.testing.assert_close(exported.module()(x), gm(x))
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "m.onnx"
    torch.onnx.export(gm, (x,), str(path), dynamo=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert math.prod(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim) == 10


def test_dropout_keeps_one_minus_p_scaled_and_the_same_mask_in_either_layout():
    from cliquegraph.units import Dropout, dropout
    x = torch.randn(8, 16, 12, 12)
    torch.manual_seed(3)
    y = dropout(x, 0.25)
    kept = y != 0
    assert abs(kept.double().mean().item() - 0.75) < 0.01   # 18,432 draws: 0.01 is 3 sigma
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    torch.manual_seed(3)  # the same elements dropped in NHWC, and the result stays NHWC
    y_nhwc = dropout(x.contiguous(memory_format=torch.channels_last), 0.25)
    assert y_nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y_nhwc, y)
    x.requires_grad_(True)  # the gradient is the same mask, scaled
    torch.manual_seed(3)
    (g,) = torch.autograd.grad(dropout(x, 0.25).sum(), [x])
    torch.testing.assert_close(g, kept.float() / 0.75)
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x
    assert not dropout(x, 1.0).any()
    half = dropout(x.detach().bfloat16(), 0.2)  # fp32 uniforms: bf16's 8 bits would keep 0.797
    assert half.dtype == torch.bfloat16 and abs(half.ne(0).double().mean().item() - 0.8) < 0.01
    assert isinstance(Dropout(0.2), torch.nn.Dropout) and not Dropout(0.2).eval()(x).ne(x).any()


def test_lean_units_hand_out_no_scratch_memory(tmp_path):
    """Outputs, input gradients and parameter gradients never live in the units' reused CPU
    scratch (a later update would overwrite them); release_scratch frees it."""
    from cliquegraph import units
    gm = lower(elaborate(tiny_spec(tmp_path, n=3, k=3, dropout="dropout 0.3",
                                   tdropout="dropout 0.3", scales="all"))).train()
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o))
             for m in gm.modules() if isinstance(m, (units.BNReLUConv, units.BNReLUPool))]
    gm(x).square().sum().backward()
    for h in hooks:
        h.remove()
    buffers = list(units._scratch.buffers.values())
    assert buffers, "the lean path used no scratch"

    def in_scratch(t):
        lo = t.untyped_storage().data_ptr()
        return any(b.untyped_storage().data_ptr() <= lo < b.untyped_storage().data_ptr()
                   + b.untyped_storage().nbytes() for b in buffers)

    handed_out = outputs + [x.grad] + [p.grad for p in gm.parameters() if p.grad is not None]
    assert len(outputs) > 10 and not any(in_scratch(t) for t in handed_out)
    units.release_scratch()
    assert not units._scratch.buffers


def test_plain_training_path_equals_the_lean_one(tmp_path, monkeypatch):
    """Where the units train with plain ops (BN without momentum, bf16/fp16 parameters
    without autocast) they give the same outputs, gradients and dropout masks as the
    hand-written lean path."""
    from cliquegraph import units
    path = tiny_spec(tmp_path, n=3, k=3, bottleneck="bottleneck 5", dropout="dropout 0.3",
                     tdropout="dropout 0.3", compression="bn relu conv 1x1 max(1, C // 2)")
    gm = lower(elaborate(path)).double().train()
    _randomise_bn(gm)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def run():
        torch.manual_seed(5)
        out = gm(x)
        return [out, *torch.autograd.grad(out.square().sum(), list(gm.parameters()),
                                          allow_unused=True)]

    lean = run()
    monkeypatch.setattr(units, "_lean", lambda bn, t: False)
    plain = run()
    assert len(lean) == len(plain) > 20
    for a, b in zip(lean, plain):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_the_network_holds_the_overrides_it_was_built_with(tmp_path):
    """elaborate records its overrides as .clq text; build of an elaborated network refuses
    other overrides (they would not be what was built), and a checkpoint keeps the network's."""
    path = tiny_spec(tmp_path).read_text().replace("input 3x8x8", "param k = 3\n  input 3x8x8")
    spec = tmp_path / "p.clq"
    spec.write_text(path.replace("width 3", "width k"))
    net = elaborate(spec, {"k": 4})
    assert net.overrides == (("k", "4"),) and net.blocks[0].width == 4
    gm = cliquegraph.build(net)
    assert cliquegraph.build(net, k="4").meta["cliquegraph"]["network"] is net
    with pytest.raises(ValueError, match="elaborated already"):
        cliquegraph.build(net, k=5)
    assert checkpoint.payload(gm)["params"] == {"k": "4"}
