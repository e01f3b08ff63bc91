"""The paper's training recipes (§6) as one preset per dataset.

    recipe = recipe_for("cifar10", epochs=30)   # CIFAR's recipe, shortened: milestones 15, 22

Nesterov SGD (momentum 0.9, weight decay 1e-4) everywhere, lr x gamma at fixed epochs. The
presets hold the milestones as fractions of their length, so a shortened or lengthened run keeps
the schedule's shape (ImageNet's 30/60/90 of 100 become 3/6/9 of 10).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int             # over all processes: a torchrun job splits it between them
    lr: float
    milestones: tuple           # epochs (1-based counts done) after which lr *= gamma
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # The paper trains CIFAR/SVHN with dropout 0.2 and ImageNet without: the dropout a spec's
    # `dropout` param gets unless --set gives one (None: leave the spec's default)
    dropout: Optional[float] = None

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "milestones": list(self.milestones)}

    @classmethod
    def from_json(cls, obj: dict) -> "Recipe":
        return cls(**{**obj, "milestones": tuple(obj["milestones"])})

    def spec_params(self, net, given: dict) -> dict:
        """The --set params plus what the recipe sets: its dropout, where the spec has a
        `dropout` param that --set left alone."""
        params = dict(given)
        if self.dropout is not None and "dropout" in dict(net.params) and "dropout" not in given:
            params["dropout"] = repr(float(self.dropout))
        return params


# dataset -> (recipe fields, milestones as fractions of epochs)
_PRESETS = {
    # CIFAR: 300 epochs, batch 64, lr 0.1 divided by 10 at 50% and 75%.
    "cifar10": (dict(epochs=300, batch_size=64, lr=0.1, dropout=0.2), (0.5, 0.75)),
    "cifar100": (dict(epochs=300, batch_size=64, lr=0.1, dropout=0.2), (0.5, 0.75)),
    # SVHN: the same for 40 epochs (on train + extra).
    "svhn": (dict(epochs=40, batch_size=64, lr=0.1, dropout=0.2), (0.5, 0.75)),
    # ImageNet: 100 epochs, x0.1 at 30, 60, 90, batch 160.
    "imagenet": (dict(epochs=100, batch_size=160, lr=0.1), (0.3, 0.6, 0.9)),
    # Not in the paper: sklearn's 1,437 training digits, CIFAR's recipe in 12 epochs (about a
    # minute and a half on two CPU cores for cliquenet-cifar k=12 T=6), without dropout: on so
    # short a run dropout 0.2 leaves BN's running statistics off (85-91% instead of 99%).
    "digits": (dict(epochs=12, batch_size=64, lr=0.1, dropout=0.0), (0.5, 0.75)),
}

FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


def recipe_for(dataset: str, **overrides) -> Recipe:
    """The preset of `dataset` with `overrides` (None values ignored) applied; milestones not
    given follow the epochs."""
    fields, fractions = _PRESETS[dataset]
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise TypeError(f"not recipe fields: {', '.join(sorted(unknown))}")
    epochs = given.get("epochs", fields["epochs"])
    # Only milestones inside the run matter (the last epoch's lr is set before it starts).
    milestones = sorted({math.floor(f * epochs + 0.5) for f in fractions} - {0})
    milestones = tuple(m for m in milestones if m < epochs)
    recipe = Recipe(**{**fields, "milestones": milestones, **given})
    return dataclasses.replace(recipe, milestones=tuple(int(m) for m in recipe.milestones))


def describe(recipe: Recipe) -> str:
    """One line for the log: what the run will do."""
    steps = ", ".join(str(m) for m in recipe.milestones)
    schedule = f"x{recipe.gamma:g} after epochs {steps}" if steps else "constant"
    sgd = "Nesterov SGD" if recipe.nesterov else "SGD"
    drop = "" if recipe.dropout is None else f", dropout {recipe.dropout:g}"
    epochs = f"{recipe.epochs} epoch" + ("" if recipe.epochs == 1 else "s")
    return (f"{epochs}, batch {recipe.batch_size}, {sgd} lr {recipe.lr:g} "
            f"({schedule}), momentum {recipe.momentum:g}, weight decay {recipe.weight_decay:g}"
            f"{drop}")
