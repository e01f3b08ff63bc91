"""Weights drawn from a fixed seed for a reference model's state_dict, and an input.

The torchvision fixtures (tests/data/torchvision/*.json) keep only the reference's keys, shapes
and logits; the tests draw the same weights again from the keys, so no weights file is stored
and torchvision is needed only to make the fixtures (make_fixtures.py, in its own venv).
Everything is float64 and drawn in the state_dict's order from one generator, which gives the
same numbers in any torch version with the same CPU generator."""

import math

import torch


def draw_state_dict(keys_shapes, seed: int = 0) -> dict:
    """{name: tensor} for [[name, shape], ...]: convs and linears scaled by 1/sqrt(fan-in) so
    activations stay bounded through a deep network, BatchNorms with non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    out = {}
    for name, shape in keys_shapes:
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g, dtype=f64) + 0.5
        elif name.endswith("running_mean"):
            out[name] = torch.randn(shape, generator=g, dtype=f64) * 0.1
        elif len(shape) > 1:
            out[name] = torch.randn(shape, generator=g, dtype=f64) / math.sqrt(
                math.prod(shape[1:]))
        elif name.endswith("weight"):
            out[name] = torch.rand(shape, generator=g, dtype=f64) + 0.5
        else:
            out[name] = torch.randn(shape, generator=g, dtype=f64) * 0.1
    return out


def draw_input(shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
