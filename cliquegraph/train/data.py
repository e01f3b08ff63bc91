"""The paper's datasets (§6) from the files users actually have, as torch Datasets.

    ds = load("cifar10", "~/data", input_shape=(3, 32, 32), train=True)
    x, y = ds[torch.arange(64)]          # a normalised batch, no DataLoader needed
    check_classes(ds, spec_classes=10)

CIFAR, SVHN and digits live in memory (uint8 or float tensors, normalised on indexing); ImageNet
is decoded from its JPEGs in __getitem__, so it wants a DataLoader with workers. Every problem with
the data on disk is a DataError whose message says what was expected and where.
"""

from __future__ import annotations

import codecs
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import did_you_mean
from . import transforms

DATASETS = ("cifar10", "cifar100", "svhn", "imagenet", "digits")


class DataError(Exception):
    """A problem with the training data on disk (missing, wrong format, corrupt, wrong labels).

    The library raises it; the CLI prints `str(err)` and exits 1, so the message is one
    paragraph naming the path and what was expected there.
    """


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
    if name in _CIFAR:
        return _cifar(_CIFAR[name], name, root, shape, train)
    if name == "svhn":
        return _svhn(root, shape, train, svhn_extra)
    return _imagenet(root, shape, train)


def check_classes(dataset, spec_classes: int) -> None:
    """The spec's classifier must have one output per class of the data."""
    if int(spec_classes) != dataset.classes:
        raise DataError(f"the spec has {spec_classes} outputs but {dataset.name} has "
                        f"{dataset.classes} classes; use --set classes={dataset.classes}")


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
    try:
        with open(path, "rb") as f:
            # The real files are Python 2 pickles: their keys come back as bytes.
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a wrong file can fail unpickling in a dozen ways; all mean the same
        raise DataError(f"{path} is not a {fmt.title} batch ({type(e).__name__}: {e}); "
                        f"{fmt.expected()}") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a {fmt.title} batch "
                        f"(a dict with data and {fmt.label_key}); {fmt.expected()}")
    data, labels = _entry(batch, "data"), _entry(batch, fmt.label_key)
    if data is None or labels is None:
        keys = ", ".join(sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k)
                                for k in batch))
        raise DataError(f"{path} has no 'data' and '{fmt.label_key}' entries (it has: {keys}); "
                        f"is it the other CIFAR? {fmt.expected()}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 N x 3072 "
                        f"(32x32 RGB, channel-major); {fmt.expected()}")
    labels = _labels(path, labels, len(data), low=0, high=fmt.classes - 1)
    return data.reshape(-1, 3, 32, 32), labels


def _entry(batch: dict, key: str):
    return batch.get(key.encode(), batch.get(key))


def _labels(path, labels, n: int, *, low: int, high: int) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if np.issubdtype(labels.dtype, np.floating) and np.array_equal(labels, np.round(labels)):
        labels = labels.astype(np.int64)  # MATLAB tools like to save whole numbers as double
    if len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {n} integer labels, got {len(labels)} of "
                        f"{labels.dtype}")
    if n and (labels.min() < low or labels.max() > high):
        raise DataError(f"{path}: labels run {labels.min()}..{labels.max()}, expected "
                        f"{low}..{high}")
    return labels.astype(np.int64)


def _pickle_allowlist() -> dict:
    """The globals a pickled batch may name: numpy's array (and scalar) rebuilders under their
    numpy 1 and numpy 2 module names, and the bytes helper of Python 3 protocol-2 pickles."""
    rebuild, scalar = np.zeros(0).__reduce__()[0], np.int64(0).__reduce__()[0]
    frombuffer = np.zeros(0).__reduce_ex__(5)[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = rebuild
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a data file should not be able to run code,
    and a CIFAR batch needs nothing else."""

    _allowed = _pickle_allowlist()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a data batch "
                                         "holds only arrays and lists") from None


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
# What Pillow raises for a file it cannot decode: unknown format, truncated, bomb, bad header.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class ImageFolder(Dataset):
    """Images decoded with Pillow on each __getitem__ (run it in DataLoader workers), transformed
    per §6: random-resized crop + flip for training, resize + centre crop for validation.

    An undecodable image does not stop a run: it is recorded in `bad_files` (per process: each
    DataLoader worker keeps its own), warned about once, and the next good image stands in.
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
                with Image.open(path) as img:
                    img = img.convert("RGB")  # greyscale and CMYK JPEGs exist in ImageNet
            except _DECODE_ERRORS as e:
                self._skip(i, path, e)
                continue
            return self._transform(img), label
        raise DataError(f"none of the {self.images} images under {self.root / self.split} "
                        f"could be decoded (first: {self.bad_files[0]}); {_IMAGENET_EXPECTED}")

    def _transform(self, img):
        if self.train:
            return transforms.train_transform(img, self.size)
        return transforms.eval_transform(img, self.size)

    def _skip(self, i: int, path: str, err: Exception):
        self._bad.add(i)
        self.bad_files.append(path)
        warnings.warn(f"skipping {path}: cannot decode it ({err}); the next image stands in",
                      stacklevel=3)

    def __repr__(self):
        return f"<imagenet {self.split}: {self.images} images, {self.classes} classes>"


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
