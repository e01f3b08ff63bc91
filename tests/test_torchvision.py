"""from_torchvision: a spec compiled with torchvision's weights computes torchvision's logits.

The fixtures (tests/data/torchvision/*.json, made by make_fixtures.py in a separate venv with
torchvision) keep only the reference's state_dict keys and shapes, its parameter count and its
logits for weights drawn from a fixed seed (reference_weights.py); the tests draw the same
weights again, so no weights file is stored and torchvision is not needed here."""

import json
import subprocess
import sys

import pytest
import torch

import cliquegraph
from cliquegraph import checkpoint, count_params, elaborate
from cliquegraph.checkpoint import CheckpointError
from cliquegraph.torchvision_weights import torchvision_layout
from conftest import ROOT, SPECS
from reference_weights import draw_input, draw_state_dict

FIXTURES = ROOT / "tests" / "data" / "torchvision"
DENSENETS = {"densenet121": "densenet-121.clq", "densenet169": "densenet-169.clq",
             "densenet201": "densenet-201.clq"}
# model -> (spec, overrides)
MODELS = {**{m: (spec, {}) for m, spec in DENSENETS.items()},
          "resnet18": ("resnet.clq", {"depth": 18}), "resnet50": ("resnet.clq", {"depth": 50}),
          "vgg16": ("vgg.clq", {"depth": 16}), "vgg16_bn": ("vgg.clq", {"bn": True}),
          "alexnet": ("alexnet.clq", {}), "mobilenet_v2": ("mobilenet-v2.clq", {}),
          "mobilenet_v3_large": ("mobilenet-v3.clq", {"size": "large"}),
          "mobilenet_v3_small": ("mobilenet-v3.clq", {"size": "small"}),
          "efficientnet_b0": ("efficientnet.clq", {}), "googlenet": ("googlenet.clq", {}),
          "shufflenet_v2_x1_0": ("shufflenet-v2.clq", {}),
          "inception_v3": ("inception-v3.clq", {})}


def fixture(model):
    path = FIXTURES / f"{model}.json"
    if not path.is_file():
        pytest.skip(f"no fixture {path.name}")
    return json.loads(path.read_text())


def reference_weights(fix):
    return draw_state_dict(fix["keys"])


@pytest.mark.parametrize("model", ["densenet121", "resnet18", "resnet50", "vgg16", "alexnet",
                                   "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                                   "efficientnet_b0", "googlenet", "shufflenet_v2_x1_0",
                                   "inception_v3"])
def test_logits_equal_torchvisions(model):
    fix = fixture(model)
    spec, overrides = MODELS[model]
    gm = cliquegraph.from_torchvision(reference_weights(fix), SPECS / spec, overrides)
    got = gm.double().eval()(draw_input(fix["input"]))
    torch.testing.assert_close(got, torch.tensor(fix["logits"], dtype=torch.float64),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_layout_is_torchvisions_state_dict_both_ways(model):
    fix = fixture(model)
    spec, overrides = MODELS[model]
    net = elaborate(SPECS / spec, overrides)
    assert count_params(net) == fix["params"]
    layout = torchvision_layout(net)
    assert list(layout) == [k for k, _ in fix["keys"]]  # every key, in torchvision's order
    ours = cliquegraph.build(net).state_dict()
    assert sorted(k for targets in layout.values() for k, _ in targets) == sorted(ours)


def test_a_state_dict_of_another_model_is_refused_with_the_first_key_that_differs():
    sd = draw_state_dict(fixture("densenet121")["keys"])
    with pytest.raises(CheckpointError, match="it has no 'features.denseblock3.denselayer25"):
        cliquegraph.from_torchvision(sd, SPECS / "densenet-169.clq")
    with pytest.raises(CheckpointError, match=r"features.conv0.weight has shape \(64, 3, 7, 7\)"
                                              r", the spec needs \(64, 1, 7, 7\)"):
        cliquegraph.from_torchvision(sd, (SPECS / "densenet-121.clq").read_text().replace(
            "input 3x224x224", "input 1x224x224"))
    sd["features.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected key 'features.extra.weight'"):
        cliquegraph.from_torchvision(sd, SPECS / "densenet-121.clq")


def test_old_densenet_key_names_load_as_torchvision_renames_them():
    """Files older than BatchNorm's counter: `norm.1.weight` for `norm1.weight`, and no
    num_batches_tracked."""
    fix = fixture("densenet121")
    sd = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
          for k, v in reference_weights(fix).items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in sd
    gm = cliquegraph.from_torchvision(sd, SPECS / "densenet-121.clq")
    assert torch.equal(gm.state_dict()["block1.g_s1_x1.weight"],
                       sd["features.denseblock1.denselayer1.norm.1.weight"].float())


def test_a_spec_torchvision_has_no_model_of_is_refused():
    with pytest.raises(CheckpointError, match=r"cliquenet_cifar has no torchvision layout: not "
                                              r"DenseNet \(its stem is not conv.*not ResNet"):
        cliquegraph.from_torchvision({}, SPECS / "cliquenet-cifar.clq")
    text = (SPECS / "densenet-121.clq").read_text().replace("stages 1", "stages 2")
    with pytest.raises(CheckpointError, match="block 1 is not a dense block"):
        cliquegraph.from_torchvision({}, text)


def test_cli_compile_from_torchvision_saves_a_checkpoint(tmp_path):
    fix = fixture("densenet121")
    sd = {k: v.float() if v.is_floating_point() else v
          for k, v in reference_weights(fix).items()}
    pth, out = tmp_path / "densenet121.pth", tmp_path / "d121.pt"
    torch.save(sd, pth)
    cli = [sys.executable, "-m", "cliquegraph", "compile", str(SPECS / "densenet-121.clq")]
    r = subprocess.run(cli + ["--from-torchvision", str(pth), "--save", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    gm, net, _ = checkpoint.load_module(out)
    assert net.name == "densenet121"
    assert torch.equal(gm.state_dict()["block2.w_0_3"],
                       sd["features.denseblock2.denselayer3.conv1.weight"][:, :128])
    # a file that is not a state_dict, and one that holds Python objects: refused, no traceback
    torch.save([1, 2], tmp_path / "list.pth")
    (tmp_path / "spec.pth").write_text("network n {}")
    for bad, says in (("list.pth", "not a state_dict"), ("spec.pth", "not a torchvision "
                                                         "state_dict in torch's zip format")):
        r = subprocess.run(cli + ["--from-torchvision", str(tmp_path / bad)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr
