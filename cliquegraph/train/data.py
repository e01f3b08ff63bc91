"""The paper's datasets (§6) from the files users actually have, as torch Datasets.

    ds = load("cifar10", "~/data", input_shape=(3, 32, 32), train=True)
    x, y = ds[torch.arange(64)]          # a normalised batch, no DataLoader needed
    check_classes(ds, net.outputs, net=net)

CIFAR, SVHN and digits live in memory (uint8 or float tensors, normalised on indexing); ImageNet
is decoded from its JPEGs in __getitem__, so it wants a DataLoader with workers. Every problem with
the data on disk is a DataError whose message says what was expected and where.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import pickletools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError, did_you_mean
from . import transforms

DATASETS = ("cifar10", "cifar100", "svhn", "imagenet", "digits")


class DataError(UserError):
    """A problem with the training data on disk (missing, wrong format, corrupt, wrong labels).

    The library raises it; the CLI prints `str(err)` and exits 1, so the message is one
    paragraph naming the path and what was expected there.
    """

    def __init__(self, message: str = ""):
        # A DataLoader re-raises a worker's exception as DataError("Caught DataError in DataLoader
        # worker process 0.\nOriginal Traceback ...") (torch's ExceptionWrapper): keep only the
        # worker's own one-paragraph message, the traceback's last line.
        if isinstance(message, str) and message.startswith("Caught DataError in DataLoader"):
            marker = f"{DataError.__module__}.{DataError.__qualname__}: "
            if marker in message:
                message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def load(name: str, data_dir, *, input_shape, train: bool, svhn_extra: bool = True) -> Dataset:
    """The train or test split of dataset `name` under `data_dir`, shaped for a spec whose input
    is input_shape = (C, H, W). ImageNet's test split is its val/ folder; digits needs no
    data_dir (sklearn bundles it)."""
    if name not in DATASETS:
        hint = did_you_mean(name, DATASETS)
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}"
                        + (f"; {hint}" if hint else ""))
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise DataError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if name == "digits":
        return _digits(shape, train)
    if data_dir is None:
        raise DataError(f"{name} needs a data folder; only digits is bundled")
    root = Path(data_dir).expanduser()
    try:
        if name in _CIFAR:
            return _cifar(_CIFAR[name], name, root, shape, train)
        if name == "svhn":
            return _svhn(root, shape, train, svhn_extra)
        return _imagenet(root, shape, train)
    except OSError as err:  # an unreadable folder or file, a symbolic link loop, a disk error
        raise DataError(_unreadable(err, root)) from None


def _unreadable(err: OSError, root: Path) -> str:
    path = err.filename if err.filename is not None else root
    if err.errno == errno.ELOOP:
        return (f"cannot read {path}: it is a symbolic link that leads back to itself (a link "
                "loop); point it at the real folder or file, or remove it")
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot read {path}: permission denied; make it readable (and folders "
                "enterable) for this user, or move it out of the data folder")
    return f"cannot read {path}: {err.strerror or err}"


def check_classes(dataset, spec_classes: int, *, net=None) -> None:
    """The spec's classifier must have one output per class of the data.

    With the IR network `net`, the advice fits the spec: `--set classes=N` only where a
    `classes` param sets the classifier's width, else an edit of the spec's `fc` line.
    """
    if int(spec_classes) == dataset.classes:
        return
    n = dataset.classes
    problem = f"the spec has {spec_classes} outputs but {dataset.name} has {n} classes"
    # Without `net`, assume the shipped specs' `fc classes`. A `classes` param whose value is
    # not the output count does not set the classifier, so setting it would not help either.
    if net is None or dict(net.params).get("classes") == spec_classes:
        raise DataError(f"{problem}; use --set classes={n}")
    if net.head and net.head[-1].kind == "fc":
        edit = f"change its last `fc` line to `fc {n}`"
    else:
        edit = f"end its head with `fc {n}`"
    raise DataError(f"{problem}; {net.path} has no `classes` param that sets its classifier's "
                    f"width, so {edit} (or add `param classes = {n}` and write `fc classes`)")


def _check_shape(name: str, shape: tuple, native: tuple) -> None:
    if shape != native:
        want, got = "x".join(map(str, native)), "x".join(map(str, shape))
        raise DataError(f"{name} images are {want} but the spec's input is {got}; {name} is "
                        f"not resized or cropped, so use a spec with input {want}")


class InMemoryImages(Dataset):
    """A whole split as one image tensor x (N x C x H x W, uint8 0..255 or float 0..1) and int64
    labels y, normalised per channel when indexed. Index with an int or with a tensor of indices:
    `ds[idx]` is then a ready batch, so a trainer can skip the DataLoader."""

    def __init__(self, name, x, y, *, classes, mean, std, split, root=None):
        self.name, self.split, self.root = name, split, root
        self.x, self.y = x, y
        self.classes = classes
        self.images = len(y)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._scale = 255.0 if x.dtype == torch.uint8 else 1.0
        self._mean = torch.tensor(self.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.std).view(-1, 1, 1)

    @property
    def tensors(self):
        """(x, y) as stored; `normalize(x[idx])` (or `ds[idx]`) is what the network sees."""
        return self.x, self.y

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / self._scale - self._mean) / self._std

    def __len__(self):
        return self.images

    def __getitem__(self, index):
        return self.normalize(self.x[index]), self.y[index]

    def __repr__(self):
        return f"<{self.name} {self.split}: {self.images} images, {self.classes} classes>"


def _channel_stats(x: np.ndarray):
    """Exact per-channel mean and std (population) of uint8 images N x C x H x W, in 0..1 units.

    A 256-bin histogram per channel keeps it exact and cheap for 600k images, where a float copy
    of the array would not fit comfortably.
    """
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        m = (counts * levels).sum() / counts.sum()
        var = (counts * levels ** 2).sum() / counts.sum() - m * m
        mean.append(m)
        std.append(math.sqrt(max(var, 0.0)) or 1.0)  # a constant channel: leave it unscaled
    return tuple(mean), tuple(std)


# --- CIFAR-10 / CIFAR-100, the "python version" -----------------------------------------------

@dataclass(frozen=True)
class _CifarFormat:
    title: str
    folder: str           # what the tarball unpacks to
    tarball: str
    train_files: tuple
    test_files: tuple
    label_key: str
    classes: int
    listing: str          # the files, for messages

    def expected(self) -> str:
        return (f"expected {self.folder}/ with {self.listing} "
                "(the 'python version' from the CIFAR site)")


_CIFAR = {
    "cifar10": _CifarFormat("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                            "labels", 10, "data_batch_1..5 and test_batch"),
    "cifar100": _CifarFormat("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
                             ("train",), ("test",), "fine_labels", 100, "train and test"),
}


def _cifar(fmt: _CifarFormat, name: str, root: Path, shape, train: bool) -> InMemoryImages:
    folder = _cifar_folder(fmt, root)
    _check_shape(name, shape, (3, 32, 32))
    # The test split is normalised with the train split's statistics, so train is always read.
    x_train, y_train = _read_cifar(fmt, folder, fmt.train_files)
    mean, std = _channel_stats(x_train)
    x, y = (x_train, y_train) if train else _read_cifar(fmt, folder, fmt.test_files)
    return InMemoryImages(name, torch.from_numpy(x), torch.from_numpy(y), classes=fmt.classes,
                          mean=mean, std=std, split="train" if train else "test", root=folder)


def _cifar_folder(fmt: _CifarFormat, root: Path) -> Path:
    """data_dir may hold the unpacked folder or be that folder."""
    if not root.is_dir():
        raise DataError(f"no {fmt.title} data under {root} (no such folder): {fmt.expected()}")
    files = fmt.train_files + fmt.test_files
    for folder in (root / fmt.folder, root):
        present = [f for f in files if (folder / f).is_file()]
        if folder.is_dir() and (present or folder.name == fmt.folder):
            missing = [f for f in files if f not in present]
            if missing:
                raise DataError(f"{fmt.title} under {folder} is incomplete: missing "
                                f"{', '.join(missing)}; {fmt.expected()}")
            return folder
    hint = ""
    if (root / fmt.tarball).is_file():
        hint = f"; {root / fmt.tarball} is still packed: run `tar xzf {fmt.tarball}` there first"
    raise DataError(f"no {fmt.title} data under {root}: {fmt.expected()}{hint}")


def _read_cifar(fmt: _CifarFormat, folder: Path, files) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_cifar_file(fmt, folder / f) for f in files]
    return (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))


def _read_cifar_file(fmt: _CifarFormat, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> uint8 N x 3 x 32 x 32 images and int64 labels."""
    raw = path.read_bytes()
    try:
        batch = _unpickle(raw)
    except Exception as e:  # a wrong file can fail unpickling in a dozen ways; all mean the same
        raise DataError(f"{path} is not a {fmt.title} batch ({type(e).__name__}: {_said(e)}); "
                        f"{fmt.expected()}") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a {fmt.title} batch "
                        f"(a dict with data and {fmt.label_key}); {fmt.expected()}")
    data, labels = _entry(batch, "data"), _entry(batch, fmt.label_key)
    if data is None or labels is None:
        raise DataError(f"{path} has no 'data' and '{fmt.label_key}' entries (it has: "
                        f"{_keys(batch)}); is it the other CIFAR? {fmt.expected()}")
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32):
        got = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
               else f"a {type(data).__name__}")
        raise DataError(f"{path}: data is {got}, expected uint8 N x 3072 "
                        f"(32x32 RGB, channel-major); {fmt.expected()}")
    labels = _labels(path, labels, len(data), low=0, high=fmt.classes - 1)
    return np.asarray(data).reshape(-1, 3, 32, 32), labels


def _entry(batch: dict, key: str):
    return batch.get(key.encode(), batch.get(key))


def _keys(batch: dict) -> str:
    """The batch's keys for a message: text keys by name (cut short), any others counted."""
    names = sorted(k.decode("latin1") if isinstance(k, bytes) else k
                   for k in batch if isinstance(k, (str, bytes)))
    shown = [name if len(name) <= 40 else name[:40] + "..." for name in names[:10]]
    rest = len(batch) - len(shown)
    return ", ".join(shown + ([f"{rest} more"] if rest else [])) or "nothing"


def _said(err: Exception) -> str:
    """An exception's text fit for a one-paragraph message: no object addresses, not kilobytes."""
    text = re.sub(r" (object )?at 0x[0-9a-fA-F]+", "", " ".join(str(err).split()))
    return text if len(text) <= 200 else text[:200] + "..."


def _labels(path, labels, n: int, *, low: int, high: int) -> np.ndarray:
    """n whole-number labels in low..high, as int64: a list of ints (CIFAR) or a numeric array
    (SVHN's N x 1, often double). Checked before any conversion, which could otherwise expand a
    list of shared lists into an array of billions of elements."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iuf":
        values = np.asarray(labels).reshape(-1)
    elif isinstance(labels, (list, tuple)):
        values = labels
    else:
        what = (f"an array of {labels.dtype.name}" if isinstance(labels, np.ndarray)
                else f"a {type(labels).__name__}")
        raise DataError(f"{path}: expected {n} integer labels, got {what}")
    if len(values) != n:
        raise DataError(f"{path}: expected {n} integer labels (one per image), got {len(values)}")
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f" and not (np.isfinite(values).all()
                                             and np.array_equal(values, np.round(values))):
            raise DataError(f"{path}: expected {n} integer labels, got {values.dtype.name} "
                            "values that are not all whole numbers")
        lo, hi = (int(values.min()), int(values.max())) if n else (low, high)
    else:
        bad = next((i for i, v in enumerate(values) if not _is_int(v)), None)
        if bad is not None:
            raise DataError(f"{path}: expected {n} integer labels, but label {bad} is a "
                            f"{type(values[bad]).__name__}")
        values = [int(v) for v in values]
        lo, hi = (min(values), max(values)) if n else (low, high)
    if lo < low or hi > high:
        raise DataError(f"{path}: labels run {_number(lo)}..{_number(hi)}, expected "
                        f"{low}..{high}")
    return np.asarray(values, dtype=np.int64)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _number(value: int) -> str:
    """An integer for a message; an absurd one by its size (str() refuses 4,300+ digits)."""
    if abs(value) < 10 ** 15:
        return str(value)
    return f"{'-' if value < 0 else ''}2^{abs(value).bit_length() - 1}"


# --- reading a pickled batch without letting the file decide how much memory it takes ---------

def _unpickle(raw: bytes):
    """A pickled batch from its bytes; memory stays within a small multiple of their size."""
    _check_opcodes(raw)
    # A real batch builds each of its bytes at most twice (a str into bytes, bytes into an array).
    return _ArrayUnpickler(io.BytesIO(raw), budget=2 * len(raw)).load()


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_opcodes(raw: bytes) -> None:
    """Refuse, before anything is built, a pickle whose opcodes alone would take memory out of
    proportion to its size: many more opcodes than a batch has (a few per 3,072-byte image), or
    a memo index beyond the opcodes read so far (the C unpickler sizes its memo table by the
    largest index the file names, so one opcode could claim gigabytes)."""
    most = 10_000 + len(raw) // 256
    for count, (op, arg, _) in enumerate(pickletools.genops(raw)):
        if count > most:
            raise pickle.UnpicklingError(f"more than {most:,} pickle opcodes in {len(raw):,} "
                                         "bytes, far more than a data batch has")
        if op.name in _MEMO_PUTS and arg > count:
            raise pickle.UnpicklingError(f"memo index {_number(arg)} at opcode {count:,}: "
                                         "picklers number their memo from 0")


# Only _reconstruct may receive numpy.ndarray; a call of it (REDUCE, NEWOBJ) would allocate
# whatever shape the file names, so the class itself is never handed out.
_NDARRAY = object()
_NUMPY_SCALAR = np.int64(0).__reduce__()[0]
_NUMPY_FROMBUFFER = np.zeros(0).__reduce_ex__(5)[0]
_PLAIN_KINDS = "biufcSU"  # booleans, integers, floats, complex numbers, bytes and str


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays of numbers or strings only: a
    data file should not be able to run code, and a CIFAR batch needs nothing else.

    What the allowed constructors build is charged to `budget` bytes, so shared references to
    one piece of data cannot be multiplied into copies of it.
    """

    def __init__(self, file, *, budget: int):
        # The real files are Python 2 pickles: their keys come back as bytes.
        super().__init__(file, encoding="bytes")
        self._left = budget
        self._allowed = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _PickledDtype,
                         ("_codecs", "encode"): self._latin1}
        for builtins in ("builtins", "__builtin__"):  # protocols 0-2 write Python 2's name
            self._allowed[(builtins, "bytes")] = _empty_bytes
            self._allowed[(builtins, "bytearray")] = self._bytearray
        for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2
            self._allowed[(f"{core}.multiarray", "_reconstruct")] = self._reconstruct
            self._allowed[(f"{core}.multiarray", "scalar")] = self._scalar
            self._allowed[(f"{core}.numeric", "_frombuffer")] = self._frombuffer

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a data batch "
                                         "holds only arrays, lists, numbers and strings") from None

    def _spend(self, nbytes: int) -> None:
        if nbytes > self._left:
            raise pickle.UnpicklingError("it builds more data than the file holds (shared "
                                         "references to its data, repeated)")
        self._left -= nbytes

    def _latin1(self, text, encoding):
        """Python 3's bytes in protocol 0-2 pickles: _codecs.encode(text, 'latin1')."""
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("_codecs.encode is allowed only to turn text into "
                                         "bytes with latin1, as pickle writes bytes")
        self._spend(len(text))
        return text.encode("latin1")

    def _bytearray(self, data=b""):
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError("bytearray is allowed only from bytes, as pickle "
                                         "writes it")
        self._spend(len(data))
        return bytearray(data)

    def _reconstruct(self, cls, shape, dtype):
        """numpy's first step in rebuilding an array: an empty one, whose state (BUILD, next)
        says its shape, dtype and bytes."""
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError("numpy's _reconstruct is allowed only for ndarray")
        array = np.ndarray.__new__(_PickledArray, (0,), np.uint8)
        array._spend = self._spend
        return array

    def _scalar(self, dtype, data):
        dtype = _plain_dtype(dtype)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise pickle.UnpicklingError(f"a numpy {dtype} scalar needs {dtype.itemsize} bytes")
        self._spend(len(data))
        return _NUMPY_SCALAR(dtype, data)

    def _frombuffer(self, buf, dtype, shape, order, *axis_order):
        """Protocol 5's array: its bytes, dtype and shape."""
        dtype, shape = _plain_dtype(dtype), _array_shape(shape)
        _check_array_bytes(buf, shape, dtype)
        self._spend(len(buf))
        return _NUMPY_FROMBUFFER(buf, dtype, shape, order, *axis_order)


def _empty_bytes(*args) -> bytes:
    """Protocols 0-2 write b'' as a call of bytes() without arguments; nothing else is needed."""
    if args:
        raise pickle.UnpicklingError("bytes() is allowed only without arguments, as pickle "
                                     "writes b''")
    return b""


class _PickledArray(np.ndarray):
    """An array that `_reconstruct` made: its state (shape, dtype, Fortran order, bytes) is
    checked against its own bytes and paid for before numpy takes it. An object array's state
    holds a list instead of bytes and is refused (numpy 2.4 crashes on a short one)."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array's state is not numpy's")
        shape, dtype, fortran, data = state[-4:]
        shape, dtype = _array_shape(shape), _plain_dtype(dtype)
        _check_array_bytes(data, shape, dtype)
        self._spend(len(data))
        super().__setstate__((1, shape, dtype, bool(fortran), data))


class _PickledDtype:
    """numpy.dtype as a pickle rebuilds it (a call with its spec, then BUILD with its state),
    held as data until an array or scalar needs it: only plain numbers and strings are made, so
    no state can describe an object, structured or subarray type."""

    spec, state = None, ()  # also when NEWOBJ makes one without calling __init__

    def __init__(self, spec=None, align=False, copy=True):
        self.spec = spec

    def __setstate__(self, state):
        self.state = state if isinstance(state, tuple) else ()

    def resolve(self) -> np.dtype | None:
        spec, state = _text(self.spec), self.state
        if not isinstance(spec, str) or len(spec) > 16 or any(p is not None for p in state[2:5]):
            return None  # state[2:5]: subarray, field names, fields
        order = _text(state[1]) if len(state) > 1 else "|"
        size = state[5] if len(state) > 5 else -1
        try:
            dtype = np.dtype(spec)
            if dtype.kind in "SU" and isinstance(size, int) and size > 0:  # bytes per item
                dtype = np.dtype(f"{dtype.kind}{size // (4 if dtype.kind == 'U' else 1)}")
            if order in ("<", ">"):
                dtype = dtype.newbyteorder(order)
        except (TypeError, ValueError, OverflowError):
            return None
        return dtype if dtype.kind in _PLAIN_KINDS else None


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value  # a Python 2 str


def _plain_dtype(dtype) -> np.dtype:
    """The numpy dtype a _PickledDtype stands for, if it is a plain number or string type."""
    plain = dtype.resolve() if isinstance(dtype, _PickledDtype) else None
    if plain is None:
        raise pickle.UnpicklingError("only arrays of plain numbers or strings are allowed "
                                     "(no object, structured or subarray dtypes)")
    return plain


def _check_array_bytes(data, shape: tuple, dtype: np.dtype) -> None:
    if not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape) * dtype.itemsize:
        raise pickle.UnpicklingError(f"an array of {_number(math.prod(shape))} {dtype} does "
                                     "not match its bytes")


def _array_shape(shape) -> tuple:
    if (isinstance(shape, tuple) and len(shape) <= 32
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        return shape
    raise pickle.UnpicklingError("an array's shape is not a tuple of sizes")


# --- SVHN, format 2 (cropped 32x32 digits) -----------------------------------------------------

_SVHN_EXPECTED = ("expected train_32x32.mat and test_32x32.mat (optionally extra_32x32.mat), "
                  "the 'format 2' cropped digits from the SVHN site")


def _svhn(root: Path, shape, train: bool, extra: bool) -> InMemoryImages:
    if not root.is_dir():
        raise DataError(f"no SVHN data under {root} (no such folder): {_SVHN_EXPECTED}")
    missing = [f for f in ("train_32x32.mat", "test_32x32.mat") if not (root / f).is_file()]
    if missing:
        raise DataError(f"no SVHN data under {root}: missing {', '.join(missing)}; "
                        f"{_SVHN_EXPECTED}")
    _check_shape("svhn", shape, (3, 32, 32))
    files = ["test_32x32.mat"]
    if train:
        files = ["train_32x32.mat"]
        if extra and (root / "extra_32x32.mat").is_file():
            files.append("extra_32x32.mat")  # the paper trains on train + extra
    parts = [_read_svhn(root / f) for f in files]
    x = torch.cat([torch.from_numpy(x) for x, _ in parts])
    y = torch.cat([torch.from_numpy(y) for _, y in parts])
    return InMemoryImages("svhn", x, y, classes=10, mean=(0.0,) * 3, std=(1.0,) * 3,
                          split="train" if train else "test", root=root)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io  # only SVHN needs it

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as e:  # scipy's answer to a v7.3 (HDF5) file
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; {_SVHN_EXPECTED}, saved as the "
                        "site ships them (MATLAB v5)") from e
    except Exception as e:  # as for pickles: any failure here means "not a .mat"
        raise DataError(f"{path} is not a readable .mat file ({type(e).__name__}: {e}); "
                        f"{_SVHN_EXPECTED}") from e
    if "X" not in mat or "y" not in mat:
        found = ", ".join(name for name, _, _ in scipy.io.whosmat(path)) or "nothing"
        raise DataError(f"{path} has no X and y variables (it has: {found}); {_SVHN_EXPECTED}")
    images = mat["X"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X is {images.dtype} {images.shape}, expected uint8 "
                        f"32 x 32 x 3 x N; {_SVHN_EXPECTED}")
    labels = _labels(path, mat["y"], images.shape[3], low=1, high=10)
    # H x W x C x N -> N x C x H x W; label 10 is the digit 0.
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels % 10


# --- ImageNet, class-per-folder JPEGs ----------------------------------------------------------

_IMAGENET_EXPECTED = ("expected train/ and val/ with one folder of JPEGs per class "
                      "(e.g. train/n01440764/*.JPEG), the same class folders in both")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff"}
# What Pillow raises for a file it cannot decode: unknown format, truncated, bad header.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
# No photograph is this elongated; a file that is (a 1 x 300,000 strip) is skipped, as a corrupt
# one is, rather than cropped from a few pixels' width.
MAX_ASPECT = 100


class ImageFolder(Dataset):
    """Images decoded with Pillow on each __getitem__ (run it in DataLoader workers), transformed
    per §6: random-resized crop + flip for training, resize + centre crop for validation.

    An undecodable image does not stop a run: it is recorded in `bad_files` (per process: each
    DataLoader worker keeps its own), warned about once, and the next good image stands in. So
    is one whose header gives a size not worth decoding: more pixels than Pillow's
    decompression-bomb limit (Image.MAX_IMAGE_PIXELS), or sides further apart than MAX_ASPECT.
    """

    def __init__(self, samples, class_names, *, size, train: bool, root: Path):
        self.name = "imagenet"
        self.samples = samples            # [(path, label)], sorted by class then file name
        self.class_names = class_names
        self.classes = len(class_names)
        self.images = len(samples)
        self.size = size                  # (H, W)
        self.train = train
        self.split = "train" if train else "val"
        self.root = root
        self.mean, self.std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
        self.bad_files: list[str] = []
        self._bad: set[int] = set()

    def __len__(self):
        return self.images

    def __getitem__(self, index: int):
        for step in range(self.images):
            i = (index + step) % self.images
            if i in self._bad:
                continue
            path, label = self.samples[i]
            try:
                img = _decode(path)
            except _Unusable as e:
                self._skip(i, path, str(e))
                continue
            return self._transform(img), label
        raise DataError(f"none of the {self.images} images under {self.root / self.split} "
                        f"could be decoded (first: {self.bad_files[0]}); {_IMAGENET_EXPECTED}")

    def _transform(self, img):
        if self.train:
            return transforms.train_transform(img, self.size)
        return transforms.eval_transform(img, self.size)

    def _skip(self, i: int, path: str, reason: str):
        self._bad.add(i)
        self.bad_files.append(path)
        warnings.warn(f"skipping {path}: {reason}; the next image stands in", stacklevel=3)

    def __repr__(self):
        return f"<imagenet {self.split}: {self.images} images, {self.classes} classes>"


class _Unusable(Exception):
    """Why an image file is skipped."""


def _decode(path: str) -> Image.Image:
    """The RGB image in `path`; its size is checked from the header, before any pixel is read."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its pixel limit and twice that (and raises above): make
            # both a skip that names the file.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size
            if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
                raise _Unusable(f"it is {width} x {height} pixels, one side more than "
                                f"{MAX_ASPECT} times the other; no photograph is that shape")
            return img.convert("RGB")  # greyscale and CMYK JPEGs exist in ImageNet
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise _Unusable(f"it is too large to decode ({e})") from None
    except _DECODE_ERRORS as e:
        verb = "read" if getattr(e, "errno", None) else "decode"  # a permission, not a format
        raise _Unusable(f"cannot {verb} it ({e})") from None


def _imagenet(root: Path, shape, train: bool) -> ImageFolder:
    split = root / ("train" if train else "val")
    for folder in (root, root / "train", split):
        if not folder.is_dir():
            raise DataError(f"no ImageNet data under {root} ({folder} is not a folder): "
                            f"{_IMAGENET_EXPECTED}")
    if shape[0] != 3:
        raise DataError(f"imagenet images are RGB but the spec's input has {shape[0]} "
                        "channels; use a spec with input 3xHxW")
    class_names = _class_folders(root / "train")
    val = root / "val"
    if val.is_dir():
        val_names = _class_folders(val)
        if val_names != class_names:
            raise DataError(f"the class folders of {val} differ from those of {root / 'train'}"
                            f" ({_difference(class_names, val_names)}); {_IMAGENET_EXPECTED}")
    samples = []
    for label, name in enumerate(class_names):
        files = sorted(e.name for e in os.scandir(split / name)
                       if e.is_file() and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES)
        if train and not files:
            raise DataError(f"{split / name} holds no images; every class needs training "
                            f"images; {_IMAGENET_EXPECTED}")
        samples += [(str(split / name / f), label) for f in files]
    if not samples:
        raise DataError(f"no images under {split}; {_IMAGENET_EXPECTED}")
    return ImageFolder(samples, class_names, size=shape[1:], train=train, root=root)


def _class_folders(split: Path) -> list[str]:
    names = sorted(e.name for e in os.scandir(split) if e.is_dir())
    if not names:
        loose = any(e.is_file() for e in os.scandir(split))
        hint = ("; it holds images directly: sort them into one folder per class "
                "(the ILSVRC val set ships flat)") if loose else ""
        raise DataError(f"no class folders under {split}{hint}; {_IMAGENET_EXPECTED}")
    return names


def _difference(train_names, val_names) -> str:
    def some(names):
        names = sorted(names)
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = []
    if missing := set(train_names) - set(val_names):
        parts.append(f"val lacks {some(missing)}")
    if extra := set(val_names) - set(train_names):
        parts.append(f"val has extra {some(extra)}")
    return "; ".join(parts)


# --- digits: sklearn's bundled 8x8 handwritten digits ------------------------------------------

DIGITS_TEST_FRACTION = 0.2


def _digits(shape, train: bool) -> InMemoryImages:
    """1,797 8x8 digits with 16 grey levels, resized to the spec's H x W and repeated over its
    channels: a real dataset that needs no download, for smoke tests and tutorials."""
    from sklearn.datasets import load_digits  # only digits needs sklearn

    channels, height, width = shape
    if min(shape) < 1:
        raise DataError(f"digits cannot fill a spec input of {'x'.join(map(str, shape))}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)  # N x 1 x 8 x 8, 0..1
    if (height, width) != (8, 8):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear",
                                            align_corners=False, antialias=True).clamp_(0, 1)
    x = x.expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target).long()
    # A fixed 80/20 split; test takes the ceiling, as sklearn's train_test_split does (360).
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))
    n_test = math.ceil(DIGITS_TEST_FRACTION * len(y))
    train_idx, test_idx = order[n_test:], order[:n_test]
    x_train = x[train_idx]
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-8)
    idx = train_idx if train else test_idx
    return InMemoryImages("digits", x[idx], y[idx], classes=10, mean=mean.tolist(),
                          std=std.tolist(), split="train" if train else "test")
