"""cliquegraph: CliqueNet, DenseNet and everything between them, from a short .clq spec.

    import cliquegraph
    gm = cliquegraph.build("specs/cliquenet-cifar.clq", k=64, T=15)   # a torch.fx.GraphModule

The language side (parse, elaborate, fmt) does not import torch; `build` and the rest of the
compiler load it on first use.
"""

from .errors import SpecError
from .elaborate import elaborate, count_params
from .fmt import fmt
from .parse import parse, parse_file

__version__ = "0.1.0"
__all__ = ["SpecError", "elaborate", "count_params", "fmt", "parse", "parse_file", "build",
           "from_original", "from_torchvision", "schedule"]


def __getattr__(name):  # torch-side API, imported on first use
    if name == "build":
        from .lower import build
        return build
    if name == "from_original":
        from .original import from_original
        return from_original
    if name == "from_torchvision":
        from .torchvision_weights import from_torchvision
        return from_torchvision
    if name == "schedule":
        from .schedule import schedule
        return schedule
    raise AttributeError(f"module 'cliquegraph' has no attribute {name!r}")
