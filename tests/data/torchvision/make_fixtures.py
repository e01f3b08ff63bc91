"""Make the torchvision fixtures: run in a venv that has torchvision (never in CI), from the
repository root:

    python -m venv REFVENV && REFVENV/bin/pip install torch torchvision
    REFVENV/bin/python tests/data/torchvision/make_fixtures.py [MODEL ...]

Each <model>.json keeps the state_dict's keys and shapes, the parameter count and, for the
models listed in LOGITS, the float64 eval-mode logits for weights drawn by
tests/reference_weights.py (seed 0) on its input (seed 1)."""

import json
import pathlib
import sys

import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/
from reference_weights import draw_input, draw_state_dict  # noqa: E402

MODELS = ["densenet121", "densenet169", "densenet201", "resnet18", "resnet50", "vgg16",
          "vgg16_bn", "alexnet"]
LOGITS = {"densenet121", "resnet18", "resnet50", "vgg16", "alexnet"}
INPUT = [2, 3, 64, 64]


def make(name):
    model = getattr(torchvision.models, name)(weights=None)
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    record = {"model": name, "torchvision": torchvision.__version__, "torch": torch.__version__,
              "keys": keys, "params": sum(p.numel() for p in model.parameters()),
              "input": INPUT, "recipe": "reference_weights.draw_state_dict(keys, seed=0), "
              "draw_input(input, seed=1), float64, eval()", "logits": None}
    if name in LOGITS:
        model.load_state_dict(draw_state_dict(keys))
        with torch.no_grad():
            logits = model.double().eval()(draw_input(INPUT))
        record["logits"] = logits.tolist()
    (HERE / f"{name}.json").write_text(json.dumps(record, separators=(",", ":")))
    print(name, record["params"])


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS:
        make(name)
