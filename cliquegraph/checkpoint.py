"""Saved modules: state_dict + the spec text and params, so the module can be rebuilt.

A file written by `compile --save` or by the runner is a plain dict, loadable with
`torch.load(path, weights_only=True)`:
    format      "cliquegraph/1"
    network     the network's name
    spec_path   where the spec came from (informative)
    spec_text   the network and its ancestors as one self-contained .clq text
    params      {name: .clq text} overrides it was built with
    state_dict  the module's state_dict
The runner adds its own keys (optimizer, scheduler, epoch, ...) beside these.
"""

from __future__ import annotations

import os

import torch

from .atomic import write_atomic

FORMAT = "cliquegraph/1"


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit: one-paragraph message for users."""


def payload(gm, spec_path, params) -> dict:
    from .elaborate import standalone
    from .values import as_text
    texts = {k: as_text(v) for k, v in (params or {}).items()}
    return {"format": FORMAT, "network": gm.meta["cliquegraph"]["name"],
            "spec_path": os.fspath(spec_path), "spec_text": standalone(spec_path),
            "params": texts, "state_dict": gm.state_dict()}


def save_atomic(obj, path) -> None:
    """torch.save, written whole or not at all (cliquegraph.atomic)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save(gm, spec_path, params, path) -> None:
    save_atomic(payload(gm, spec_path, params), path)


def read(path) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cliquegraph checkpoint (written by "
                              "`cliquegraph compile --save` or the runner)")
    return obj


def rebuild(obj, path="<checkpoint>"):
    """The module a checkpoint describes, with its weights loaded."""
    from .elaborate import elaborate
    from .lower import lower
    net = elaborate(obj["spec_path"], obj["params"], text=obj["spec_text"])
    gm = lower(net)
    gm.meta["cliquegraph"]["params"] = dict(obj["params"])
    load_state(gm, obj["state_dict"], path)
    return gm, net


def load_state(gm, state_dict, path="<checkpoint>") -> None:
    """Load weights, refusing (with the first mismatched key) a state_dict of another spec."""
    own = gm.state_dict()
    for key, value in state_dict.items():
        if key not in own:
            raise CheckpointError(f"{path}: weights do not fit this spec: unexpected key {key!r}")
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: weights do not fit this spec: {key} has shape "
                                  f"{tuple(value.shape)}, the spec needs {tuple(own[key].shape)}")
    for key in own:
        if key not in state_dict:
            raise CheckpointError(f"{path}: weights do not fit this spec: missing key {key!r}")
    gm.load_state_dict(state_dict)


def load_module(path):
    """(GraphModule, IR network, checkpoint dict) from a checkpoint file."""
    obj = read(path)
    gm, net = rebuild(obj, os.fspath(path))
    return gm, net, obj
