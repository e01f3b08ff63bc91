"""Make the torchvision fixtures: run in a venv that has torchvision (never in CI), from the
repository root:

    python -m venv REFVENV && REFVENV/bin/pip install torch torchvision
    REFVENV/bin/python tests/data/torchvision/make_fixtures.py [MODEL ...]

Each <model>.json keeps the state_dict's keys and shapes, the parameter count and, for the
models listed in LOGITS, the float64 eval-mode logits for weights drawn by
tests/reference_weights.py (seed 0) on its input (seed 1).

The input is INPUT, [2, 3, 64, 64], except where INPUTS says otherwise: inception_v3 needs at
least 75x75 and takes [2, 3, 139, 139], which leaves 7x7 at Mixed_6 and 3x3 at Mixed_7, so
every tap of its 1x7/7x1 and 1x3/3x1 convolutions and their padding is exercised.
googlenet and inception_v3 are built as KWARGS says (no auxiliary classifiers, no init, and
transform_input=False, which is also their default with weights=None); their records keep
those arguments under "kwargs" and the model's transform_input under "transform_input"."""

import json
import pathlib
import sys

import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/
from reference_weights import draw_input, draw_state_dict  # noqa: E402

MODELS = ["densenet121", "densenet169", "densenet201", "resnet18", "resnet50", "vgg16",
          "vgg16_bn", "alexnet", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
          "efficientnet_b0", "shufflenet_v2_x1_0", "googlenet", "inception_v3"]
LOGITS = {"densenet121", "resnet18", "resnet50", "vgg16", "alexnet", "mobilenet_v2",
          "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
          "googlenet", "inception_v3"}
INPUT = [2, 3, 64, 64]
INPUTS = {"inception_v3": [2, 3, 139, 139]}
# constructor arguments besides weights=None
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False, "transform_input": False},
          "inception_v3": {"aux_logits": False, "init_weights": False, "transform_input": False}}


def make(name):
    kwargs = KWARGS.get(name, {})
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    shape = INPUTS.get(name, INPUT)
    record = {"model": name, "torchvision": torchvision.__version__, "torch": torch.__version__,
              "keys": keys, "params": sum(p.numel() for p in model.parameters()),
              "input": shape, "recipe": "reference_weights.draw_state_dict(keys, seed=0), "
              "draw_input(input, seed=1), float64, eval()", "logits": None}
    if kwargs:
        record["kwargs"] = kwargs
    if hasattr(model, "transform_input"):
        record["transform_input"] = model.transform_input
    if name in LOGITS:
        model.load_state_dict(draw_state_dict(keys))
        with torch.no_grad():
            logits = model.double().eval()(draw_input(shape))
        record["logits"] = logits.tolist()
    (HERE / f"{name}.json").write_text(json.dumps(record, separators=(",", ":")))
    print(name, record["params"])


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS:
        make(name)
