"""The bundled training runner: datasets of the paper (§6) and, on top of them, the loop."""

from .data import DATASETS, DataError, check_classes, load

__all__ = ["DATASETS", "DataError", "check_classes", "load"]
