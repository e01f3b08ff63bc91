"""Make the model-zoo fixtures. Run with the reference venv (never in CI; cliquegraph itself
does not depend on torch, torchvision, timm or pytorchcv), from the repository root:

    /work/refvenv2/bin/python tests/data/zoo/make_zoo.py [NAME ...]

(that venv holds torch + torchvision, plus `pip install timm pytorchcv`).

For each model (random init, eval mode, CPU) it writes tests/data/zoo/<name>.json with:
  reference  where the model comes from ("torchvision.models.resnet18", "timm seresnet50",
             "pytorchcv cbam_resnet50", ...)
  input      [C, H, W] of one sample ([3, 224, 224]; CIFAR models [3, 32, 32])
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
               "resnext50_32x4d", "vgg16", "vgg19", "vgg16_bn", "vgg19_bn", "alexnet"]
TIMM = ["seresnet50"]
PYTORCHCV = ["cbam_resnet50", "preresnet18", "preresnet50", "resnet20_cifar10",
             "resnet56_cifar10", "resnet110_cifar10", "seresnet20_cifar10", "wrn28_10_cifar10",
             "pyramidnet110_a48_cifar10", "resnext29_32x4d_cifar10"]
MODELS = TORCHVISION + TIMM + PYTORCHCV


def build(name):
    """Return (model, reference string, input [C, H, W], classes, versions)."""
    versions = {"torch": torch.__version__}
    if name in TORCHVISION:
        import torchvision
        versions["torchvision"] = torchvision.__version__
        model = getattr(torchvision.models, name)(weights=None)
        ref = f"torchvision.models.{name}"
    elif name in TIMM:
        import timm
        versions["timm"] = timm.__version__
        model = timm.create_model(name, pretrained=False)
        ref = f"timm {name}"
    elif name in PYTORCHCV:
        import importlib.metadata
        from pytorchcv.model_provider import get_model
        versions["pytorchcv"] = importlib.metadata.version("pytorchcv")
        model = get_model(name, pretrained=False)
        ref = f"pytorchcv {name}"
    else:
        raise SystemExit(f"unknown model {name}")
    cifar = name.endswith("_cifar10")
    return model, ref, [3, 32, 32] if cifar else [3, 224, 224], 10 if cifar else 1000, versions


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
