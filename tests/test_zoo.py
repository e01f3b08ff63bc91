"""The seeds' residual, attention and plain networks, written as specs: each is exact to its
reference implementation (torchvision, timm, pytorchcv): the same parameter count, the same
sorted list of parameter shapes, and FLOPs within 2%.

The fixtures (tests/data/zoo/*.json) were made by tests/data/zoo/make_zoo.py in a separate
venv holding the references; nothing here needs them installed. The networks are built on
the meta device: shapes only, no memory, no initialisation time."""

import json

import pytest
import torch

import cliquegraph
from cliquegraph import count_params, elaborate
from cliquegraph.summary import count_flops
from cliquegraph.units import SqueezeExcite
from conftest import ROOT, SPECS

FIXTURES = ROOT / "tests" / "data" / "zoo"

# fixture -> (spec, overrides)
ZOO = {
    "resnet18": ("resnet.clq", {"depth": 18}),
    "resnet34": ("resnet.clq", {"depth": 34}),
    "resnet50": ("resnet.clq", {"depth": 50}),
    "resnet101": ("resnet.clq", {"depth": 101}),
    "resnet152": ("resnet.clq", {"depth": 152}),
    "wide_resnet50_2": ("resnet.clq", {"width_per_group": 128}),
    "resnext50_32x4d": ("resnet.clq", {"groups": 32, "width_per_group": 4}),
    "seresnet50": ("resnet.clq", {"attention": "se"}),
    "cbam_resnet50": ("resnet.clq", {"attention": "cbam"}),
    "preresnet18": ("preact-resnet.clq", {"depth": 18}),
    "preresnet50": ("preact-resnet.clq", {"depth": 50}),
    "resnet20_cifar10": ("resnet-cifar.clq", {"depth": 20}),
    "resnet56_cifar10": ("resnet-cifar.clq", {"depth": 56}),
    "resnet110_cifar10": ("resnet-cifar.clq", {"depth": 110}),
    "seresnet20_cifar10": ("resnet-cifar.clq", {"attention": "se"}),
    "wrn28_10_cifar10": ("wrn-cifar.clq", {}),
    "pyramidnet110_a48_cifar10": ("pyramidnet-cifar.clq", {}),
    "resnext29_32x4d_cifar10": ("resnext-cifar.clq", {}),
    "vgg16": ("vgg.clq", {"depth": 16}),
    "vgg19": ("vgg.clq", {"depth": 19}),
    "vgg16_bn": ("vgg.clq", {"depth": 16, "bn": True}),
    "vgg19_bn": ("vgg.clq", {"depth": 19, "bn": True}),
    "alexnet": ("alexnet.clq", {}),
    "mobilenetv1_100": ("mobilenet-v1.clq", {}),
    "mobilenet_v2": ("mobilenet-v2.clq", {}),
    "mobilenet_v3_large": ("mobilenet-v3.clq", {"size": "large"}),
    "mobilenet_v3_small": ("mobilenet-v3.clq", {"size": "small"}),
    **{f"efficientnet_b{v}": ("efficientnet.clq", {"variant": f"b{v}"}) for v in range(8)},
    "googlenet": ("googlenet.clq", {}),
    "shufflenet_v2_x1_0": ("shufflenet-v2.clq", {}),
    "inception_v3": ("inception-v3.clq", {}),
    "legacy_xception": ("xception.clq", {}),
}


def fixture(model):
    return json.loads((FIXTURES / f"{model}.json").read_text())


def _meta_build(spec, overrides):
    with torch.device("meta"):
        return cliquegraph.build(SPECS / spec, overrides)


def _shapes(module, squeeze_1x1=False):
    shapes = [list(p.shape) for p in module.parameters()]
    return sorted(_squeezed(s) if squeeze_1x1 else s for s in shapes)


def _squeezed(shape):
    """A 1x1 conv on a pooled vector is a Linear: timm's and pytorchcv's SE write it as a
    conv (C', C, 1, 1), cliquegraph's SE as a Linear (C', C)."""
    return shape[:2] if len(shape) == 4 and shape[2:] == [1, 1] else shape


@pytest.mark.parametrize("model", sorted(ZOO))
def test_the_spec_has_the_references_parameters_and_flops(model):
    spec, overrides = ZOO[model]
    fix = fixture(model)
    net = elaborate(SPECS / spec, overrides)
    assert net.input_shape == tuple(fix["input"]) and net.outputs == fix["classes"]
    assert count_params(net) == fix["params"]
    gm = _meta_build(spec, overrides)
    se = any(isinstance(m, SqueezeExcite) for m in gm.modules())
    assert _shapes(gm, se) == sorted(_squeezed(s) if se else s for s in fix["shapes"])
    flops = sum(count_flops(gm, net.input_shape).values())
    assert abs(flops - fix["flops"]) <= 0.02 * fix["flops"], (flops, fix["flops"])


# ---- what none of the references can say ------------------------------------------------------

def _digits_run(tmp_path, spec, *sets):
    from cliquegraph.cli import main
    out = tmp_path / "run"
    args = [a for name_value in sets for a in ("--set", name_value)]
    assert main(["train", str(spec), "--train", "digits", "--out", str(out), "--device", "cpu",
                 "--epochs", "3", "--threads", "1", *args]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, torch.load(out / "last.pt", map_location="cpu", weights_only=True)


def test_a_resnet_whose_last_stage_is_a_two_stage_clique_trains_on_digits(tmp_path, capsys):
    """resnet.clq with clique_last: the last stage's first unit strides and widens, then its
    other units form a clique whose W_ij are read in Stage I and again in Stage II."""
    spec = tmp_path / "resnet.clq"
    spec.write_text((SPECS / "resnet.clq").read_text().replace("input 3x224x224",
                                                               "input 1x32x32"))
    sets = ("depth=34", "planes=4", "clique_last=true", "classes=10")
    net = elaborate(spec, dict(s.split("=") for s in sets))
    clique = net.blocks[-1]
    assert (clique.topology, clique.stages, clique.merge, clique.layers) == ("clique", 2, "add", 2)
    gm = cliquegraph.build(net)
    reads = {n.target: len(n.users) for n in gm.graph.nodes if n.op == "get_attr"}
    assert reads["block5.w_1_2"] == 2 and reads["block5.w_2_1"] == 1  # shared by both stages
    assert "block5.g_s2_x2" in dict(gm.named_modules())  # Stage II's own BNs
    rows, last = _digits_run(tmp_path, spec, *sets)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] and rows[-1]["test_acc"] > 0.25  # chance is 0.1
    assert "block5.w_2_1" in last["state_dict"]


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_a_cliquenet_with_attention_inside_its_units_trains_on_digits(tmp_path, capsys,
                                                                      attention):
    sets = ("k=6", "T=6", f"in_unit={attention}")
    net = elaborate(SPECS / "cliquenet-cifar.clq", dict(s.split("=") for s in sets))
    assert [op.kind for op in net.blocks[0].unit.body] == [attention, "dropout"] or \
        [op.kind for op in net.blocks[0].unit.body] == ["dropout", attention]
    rows, last = _digits_run(tmp_path, SPECS / "cliquenet-cifar.clq", *sets)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] and rows[-1]["test_acc"] > 0.25  # chance is 0.1
    # one attention module per layer, reused by both stages
    assert sum(k.endswith("fc1.weight") and ".x" in k for k in last["state_dict"]) == 3 * 2
