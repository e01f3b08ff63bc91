"""Make the model-zoo fixtures. Run with the reference venv (never in CI; cliquegraph itself
does not depend on torch, torchvision, timm or pytorchcv), from the repository root:

    /work/refvenv2/bin/python tests/data/zoo/make_zoo.py [NAME ...]

(that venv holds torch + torchvision, plus `pip install timm pytorchcv`).

For each model (random init, eval mode, CPU) it writes tests/data/zoo/<name>.json with:
  reference  where the model comes from ("torchvision.models.resnet18", "timm seresnet50",
             "pytorchcv cbam_resnet50", ...), with any constructor arguments besides
             weights=None / pretrained=False ("torchvision.models.googlenet(aux_logits=False,
             init_weights=False)"; googlenet and inception_v3 are built without the auxiliary
             classifiers, and with weights=None their transform_input is False;
             "timm legacy_xception" is timm's name for the old Cadene "xception")
  input      [C, H, W] of one sample: [3, 224, 224] except CIFAR models [3, 32, 32];
             inception_v3 and legacy_xception [3, 299, 299]; efficientnet_b1 .. b7 at
             their own resolutions 240, 260, 300, 380, 456, 528, 600 (b0 224), see INPUTS
  classes    number of output classes (1000; CIFAR models 10)
  params     trainable parameter count
  flops      total FLOPs that torch.utils.flop_counter.FlopCounterMode counts for one forward
             pass at batch 1 (its own convention: 2 x multiply-adds)
  shapes     sorted list of the trainable parameter shapes (lists of ints, lexicographic)
  keys       [[state_dict key, shape], ...] in state_dict order, parameters and buffers,
             without num_batches_tracked
  versions   library versions used
"""

import json
import pathlib
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = pathlib.Path(__file__).resolve().parent

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
               "resnext50_32x4d", "vgg16", "vgg19", "vgg16_bn", "vgg19_bn", "alexnet",
               "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
               *[f"efficientnet_b{i}" for i in range(8)], "shufflenet_v2_x1_0", "googlenet",
               "inception_v3"]
TIMM = ["seresnet50", "mobilenetv1_100", "legacy_xception"]
PYTORCHCV = ["cbam_resnet50", "preresnet18", "preresnet50", "resnet20_cifar10",
             "resnet56_cifar10", "resnet110_cifar10", "seresnet20_cifar10", "wrn28_10_cifar10",
             "pyramidnet110_a48_cifar10", "resnext29_32x4d_cifar10"]
MODELS = TORCHVISION + TIMM + PYTORCHCV
# constructor arguments besides weights=None / pretrained=False
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False},
          "inception_v3": {"aux_logits": False, "init_weights": False}}
# [C, H, W] where not [3, 224, 224] (CIFAR models: [3, 32, 32])
INPUTS = {"inception_v3": [3, 299, 299], "legacy_xception": [3, 299, 299],
          **{f"efficientnet_b{i}": [3, r, r]
             for i, r in enumerate([224, 240, 260, 300, 380, 456, 528, 600])}}


def build(name):
    """Return (model, reference string, input [C, H, W], classes, versions)."""
    versions = {"torch": torch.__version__}
    kwargs = KWARGS.get(name, {})
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    if name in TORCHVISION:
        import torchvision
        versions["torchvision"] = torchvision.__version__
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
        ref = f"torchvision.models.{name}" + (f"({args})" if args else "")
    elif name in TIMM:
        import timm
        versions["timm"] = timm.__version__
        model = timm.create_model(name, pretrained=False, **kwargs)
        ref = f"timm {name}" + (f"({args})" if args else "")
    elif name in PYTORCHCV:
        import importlib.metadata
        from pytorchcv.model_provider import get_model
        versions["pytorchcv"] = importlib.metadata.version("pytorchcv")
        model = get_model(name, pretrained=False)
        ref = f"pytorchcv {name}"
    else:
        raise SystemExit(f"unknown model {name}")
    cifar = name.endswith("_cifar10")
    input_shape = [3, 32, 32] if cifar else INPUTS.get(name, [3, 224, 224])
    return model, ref, input_shape, 10 if cifar else 1000, versions


def make(name):
    torch.manual_seed(0)
    model, ref, input_shape, classes, versions = build(name)
    model = model.eval().cpu()
    params = [p for p in model.parameters() if p.requires_grad]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(torch.randn(1, *input_shape))
    if list(out.shape) != [1, classes]:
        raise SystemExit(f"{name}: output shape {list(out.shape)}, expected [1, {classes}]")
    record = {
        "reference": ref,
        "input": input_shape,
        "classes": classes,
        "params": sum(p.numel() for p in params),
        "flops": int(counter.get_total_flops()),
        "shapes": sorted(list(p.shape) for p in params),
        "keys": [[k, list(v.shape)] for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")],
        "versions": versions,
    }
    # one line per top-level key, each value compact
    lines = [f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in record.items()]
    (HERE / f"{name}.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"{name:28s} params {record['params']:>12,d}  flops {record['flops']:>16,d}")


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS:
        make(name)
