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
    se = overrides.get("attention") == "se"
    assert _shapes(gm, se) == sorted(_squeezed(s) if se else s for s in fix["shapes"])
    flops = sum(count_flops(gm, net.input_shape).values())
    assert abs(flops - fix["flops"]) <= 0.02 * fix["flops"], (flops, fix["flops"])
