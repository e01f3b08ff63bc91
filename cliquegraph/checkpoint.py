"""Saved modules: state_dict + the spec text and params, so the module can be rebuilt.

A file written by `compile --save` or by the runner is a plain dict, loadable with
`torch.load(path, weights_only=True)`:
    format      "cliquegraph/1"
    network     the network's name
    spec_path   where the spec came from (informative)
    spec_text   the network and its ancestors as one self-contained .clq text
    params      {name: .clq text} overrides it was built with
    state_dict  the module's state_dict
    digest      SHA-256 over everything else (see content_digest)
The runner adds its own keys (optimizer, scheduler, epoch, ...) beside these.

torch does not check the zip's CRCs when it loads, so bytes flipped on disk or in a copy would
load as other weights; the digest is what catches them.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile

import torch

from .atomic import write_atomic
from .errors import UserError

FORMAT = "cliquegraph/1"
_ZIP_MAGIC = b"PK\x03\x04"
_REQUIRED = {"network": str, "spec_text": str, "params": dict, "state_dict": dict}


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit: one-paragraph message for users."""


def payload(gm) -> dict:
    """The checkpoint of a module cliquegraph.build made: exactly the spec text and params it
    was built from (its meta), never the spec file as it is now."""
    net = gm.meta["cliquegraph"]["network"]
    return {"format": FORMAT, "network": net.name, "spec_path": net.path,
            "spec_text": net.text, "params": dict(net.overrides),
            "state_dict": gm.state_dict()}


def content_digest(obj: dict) -> str:
    """SHA-256 of a checkpoint's content (every key but `digest`), independent of how torch
    lays it out in the file."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != "digest"})
    return h.hexdigest()


def _feed(h, v) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(v, dict):
        h.update(f"D{len(v)}:".encode())
        for key in sorted(v, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, v[key])
    elif isinstance(v, (list, tuple)):
        h.update(f"{'L' if isinstance(v, list) else 'U'}{len(v)}:".encode())
        for item in v:
            _feed(h, item)
    elif isinstance(v, float):
        h.update(f"F{v.hex()};".encode())
    elif isinstance(v, bytes):
        h.update(f"B{len(v)}:".encode() + v)
    else:  # str, int, bool, None: their repr is exact
        text = repr(v)
        h.update(f"{type(v).__name__}{len(text)}:{text}".encode())


def save_atomic(obj, path) -> None:
    """torch.save with a digest, written whole or not at all (cliquegraph.atomic); a failed
    write raises OSError (ENOSPC for a full disk) and leaves the previous file as it was."""
    obj = {**obj, "digest": content_digest(obj)}
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save(gm, path) -> None:
    """The checkpoint of a module that cliquegraph.build made (see payload)."""
    save_atomic(payload(gm), path)


def read(path) -> dict:
    """A checkpoint's dict, checked: a readable torch file of plain data, our format, the
    fields a module needs, and a digest that matches. Anything else is a CheckpointError."""
    path = os.fspath(path)
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cliquegraph checkpoint (written by "
                              "`cliquegraph compile --save` or the runner)")
    require(obj, path, _REQUIRED)
    bad = [k for k, v in obj["state_dict"].items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad or not all(isinstance(k, str) and isinstance(v, str)
                      for k, v in obj["params"].items()):
        what = "state_dict" if bad else "params"
        raise CheckpointError(f"{path}: a damaged cliquegraph checkpoint: its {what} is not "
                              f"a mapping of names to {'tensors' if bad else 'texts'}")
    digest = obj.get("digest")
    if digest is not None and digest != content_digest(obj):
        raise CheckpointError(f"{path}: damaged: its content does not match the SHA-256 "
                              "digest written with it (bytes changed on disk or in a copy)")
    return obj


def read_torch_file(path, what: str = "checkpoint"):
    """What a file torch.save wrote holds, read safely: a regular file in torch's zip format
    whose records are stored as torch writes them, unpickled with torch's weights-only loader
    (tensors and plain data, never other Python objects). Anything else is a CheckpointError;
    `what` names the kind of file expected in its message."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CheckpointError(f"{path}: no such checkpoint file" if not os.path.lexists(path)
                              else f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: not a {what} file (a "
                              f"{'folder' if stat.S_ISDIR(mode) else 'special file'})")
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    if not head.startswith(_ZIP_MAGIC):
        raise CheckpointError(_not_a_checkpoint(path, head) if what == "checkpoint" else
                              f"{path}: not a {what} in torch's zip format (an old torch file? "
                              "load it with the torch that wrote it and torch.save it again)")
    _check_records(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(_unreadable(path, exc)) from None


def _check_records(path: str) -> None:
    """torch writes every record of its zip stored, not compressed, so the records cannot add
    up to more than the file; a compressed one (a zip bomb: 400 KB that torch inflated to
    400 MB before refusing it) is refused before torch reads anything."""
    try:
        with zipfile.ZipFile(path) as zf:
            records = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load says what is wrong with it
    size = os.path.getsize(path)
    if (any(r.compress_type != zipfile.ZIP_STORED for r in records)
            or sum(r.file_size for r in records) > size):
        raise CheckpointError(f"{path}: not a checkpoint as torch writes one (its records are "
                              "compressed, or add up to more than the file); refusing to "
                              "unpack it")


def require(obj: dict, path, fields: dict) -> None:
    """Each of `fields` ({key: type}) present in `obj` with that type, or a CheckpointError
    naming the first that is not."""
    for key, kind in fields.items():
        if key not in obj:
            raise CheckpointError(f"{path}: a damaged cliquegraph checkpoint: it has no "
                                  f"{key!r}")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{path}: a damaged cliquegraph checkpoint: its {key!r} is "
                                  f"a {type(value).__name__}, not a {kind.__name__}")


def _not_a_checkpoint(path: str, head: bytes) -> str:
    where = "checkpoints are the last.pt and best.pt of a run, or a `compile --save` file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and re.search(r"^\s*(network|include)\b", text, re.M):
        return (f"{path} is a .clq spec, not a checkpoint ({where}); to train it: "
                f"cliquegraph train {path} --train DATASET")
    kind = ("an empty file" if not head else "a text file" if text is not None
            else "not a torch zip archive")
    return f"{path}: not a readable checkpoint ({kind}; {where})"


def _unreadable(path: str, exc: Exception) -> str:
    msg = str(exc)
    if isinstance(exc, RuntimeError) and ("zip archive" in msg or "central directory" in msg):
        return (f"{path}: truncated or damaged (its zip archive is incomplete: a copy or a "
                "write cut short?)")
    found = re.search(r"GLOBAL ([\w.]+)", msg)
    if "Weights only load failed" in msg or found:
        name = f" ({found.group(1)})" if found else ""
        return (f"{path}: holds Python objects{name} besides tensors and plain data; "
                "cliquegraph never unpickles those (its checkpoints hold only tensors, numbers, "
                "strings, lists and dicts)")
    first = (msg.splitlines() or ["corrupt"])[0][:200]
    return f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})"


def network_of(obj: dict, path="<checkpoint>"):
    """The IR network a checkpoint was built from (its own spec text and params)."""
    from .elaborate import elaborate
    return elaborate(obj.get("spec_path") or os.fspath(path), obj["params"],
                     text=obj["spec_text"], includes=False)


def rebuild(obj, path="<checkpoint>"):
    """The module a checkpoint describes, with its weights loaded."""
    from .lower import build
    gm = build(network_of(obj, path))
    load_state(gm, obj["state_dict"], path)
    return gm, gm.meta["cliquegraph"]["network"]


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
