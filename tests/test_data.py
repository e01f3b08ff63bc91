"""The datasets of §6 load from the files users have, normalised as the recipes say, and every bad
input is a DataError that names the path. Each test writes a tiny fake copy of the real format."""

import io
import pickle
import struct
import warnings

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from sklearn.datasets import load_digits

from cliquegraph.train import DATASETS, DataError, check_classes, load
from cliquegraph.train import transforms

CIFAR = (3, 32, 32)


# --- writers of the real formats, tiny ---------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR site: every str and bytes as a py2 str
    (BINSTRING), numpy under its numpy 1 module name."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar10(folder, n=6, seed=0):
    """cifar-10-batches-py/ as the site ships it: Python-2 style pickles with bytes keys."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"data": data, b"labels": labels, b"batch_label": name.encode()}
        (folder / name).write_bytes(py2_pickle(batch))
        batches[name] = (data, labels)
    return batches


def write_cifar100(folder, n=8, seed=1):
    """cifar-100-python/, here with str keys (a Python 3 re-pickle) and fine/coarse labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": list(range(95, 95 + n // 2)) + list(range(n - n // 2)),
                 "coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def write_svhn_mat(path, labels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    scipy.io.savemat(path, {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
    return x


def write_svhn(folder, extra=True):
    folder.mkdir(parents=True, exist_ok=True)
    x = write_svhn_mat(folder / "train_32x32.mat", [1, 2, 10, 5])
    write_svhn_mat(folder / "test_32x32.mat", [10, 3, 7], seed=1)
    if extra:
        write_svhn_mat(folder / "extra_32x32.mat", [10] * 5, seed=2)
    return x


def write_jpeg(path, size, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG")


def write_imagenet(root, classes=("n02", "n01"), per_class=3, val_classes=None):
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c, name in enumerate(names):
            for i in range(per_class):
                write_jpeg(root / split / name / f"{name}_{i}.JPEG", (40 + 7 * i, 30 + 5 * c),
                           seed=100 * c + i + (50 if split == "val" else 0))
    return root


# --- CIFAR -------------------------------------------------------------------------------------

def test_cifar10_loads_the_python_version_as_uint8_in_memory(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load("cifar10", tmp_path, input_shape=CIFAR, train=True)
    x, y = ds.tensors
    assert (ds.name, ds.classes, ds.images, len(ds)) == ("cifar10", 10, 30, 30)
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    data, labels = batches["data_batch_1"]
    assert torch.equal(x[:6], torch.from_numpy(data.reshape(6, 3, 32, 32)))  # channel-major rows
    assert y[:6].tolist() == labels
    image, label = ds[0]
    assert image.shape == CIFAR and image.dtype == torch.float32 and label.item() == labels[0]


def test_cifar_data_dir_may_be_the_unpacked_folder_itself(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    outer = load("cifar10", tmp_path, input_shape=CIFAR, train=False)
    inner = load("cifar10", tmp_path / "cifar-10-batches-py", input_shape=CIFAR, train=False)
    assert torch.equal(outer.tensors[0], inner.tensors[0]) and outer.images == 6


def test_cifar_normalisation_is_per_channel_from_the_train_split(tmp_path):
    write_cifar10(tmp_path)
    train = load("cifar10", tmp_path, input_shape=CIFAR, train=True)
    test = load("cifar10", tmp_path, input_shape=CIFAR, train=False)
    pixels = train.tensors[0].double() / 255
    assert np.allclose(train.mean, pixels.mean(dim=(0, 2, 3)), atol=1e-9)
    assert np.allclose(train.std, pixels.std(dim=(0, 2, 3), unbiased=False), atol=1e-9)
    assert test.mean == train.mean and test.std == train.std  # test reuses train statistics
    batch, labels = train[torch.arange(train.images)]
    assert batch.shape == (30, 3, 32, 32) and labels.shape == (30,)
    assert torch.allclose(batch.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(batch.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)


def test_cifar100_reads_fine_labels_with_str_keys(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    ds = load("cifar100", tmp_path, input_shape=CIFAR, train=True)
    assert ds.classes == 100 and ds.tensors[1].tolist() == [95, 96, 97, 98, 0, 1, 2, 3]


# --- SVHN --------------------------------------------------------------------------------------

def test_svhn_label_10_is_digit_0_and_pixels_are_divided_by_255(tmp_path):
    raw = write_svhn(tmp_path, extra=False)
    ds = load("svhn", tmp_path, input_shape=CIFAR, train=True)
    x, y = ds.tensors
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [1, 2, 0, 5]
    assert ds.mean == (0.0, 0.0, 0.0) and ds.std == (1.0, 1.0, 1.0)
    image, _ = ds[2]
    expected = torch.from_numpy(raw[:, :, :, 2]).permute(2, 0, 1).float() / 255
    assert torch.allclose(image, expected)


def test_svhn_trains_on_train_plus_extra_when_present(tmp_path):
    write_svhn(tmp_path, extra=True)
    assert load("svhn", tmp_path, input_shape=CIFAR, train=True).images == 4 + 5
    assert load("svhn", tmp_path, input_shape=CIFAR, train=True, svhn_extra=False).images == 4
    test = load("svhn", tmp_path, input_shape=CIFAR, train=False)
    assert test.images == 3 and test.tensors[1].tolist() == [0, 3, 7]


# --- digits ------------------------------------------------------------------------------------

def test_digits_is_a_fixed_80_20_split_of_1797_images():
    train = load("digits", None, input_shape=(1, 8, 8), train=True)
    test = load("digits", None, input_shape=(1, 8, 8), train=False)
    assert (train.images, test.images, train.classes) == (1437, 360, 10)
    again = load("digits", None, input_shape=(1, 8, 8), train=True)
    assert torch.equal(train.tensors[0], again.tensors[0])
    assert torch.equal(train.tensors[1], again.tensors[1])
    # the two splits together are the whole set, every image once, at 16 grey levels -> 0..1
    bunch = load_digits()
    split = torch.cat([train.tensors[0], test.tensors[0]]).flatten(1) * 16
    labels = torch.cat([train.tensors[1], test.tensors[1]])
    pairs = sorted(zip(split.round().int().tolist(), labels.tolist()))
    assert pairs == sorted(zip(bunch.data.astype(int).tolist(), bunch.target.tolist()))


def test_digits_adapt_to_the_spec_input_and_normalise_with_train_statistics():
    train = load("digits", None, input_shape=(3, 32, 32), train=True)
    x, _ = train.tensors
    assert x.shape == (1437, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])  # grey, repeated over the channels
    batch, _ = train[torch.arange(train.images)]
    assert torch.allclose(batch.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    test = load("digits", None, input_shape=(3, 32, 32), train=False)
    assert test.mean == train.mean


# --- ImageNet ----------------------------------------------------------------------------------

def test_imagenet_labels_follow_sorted_train_folders(tmp_path):
    write_imagenet(tmp_path)
    ds = load("imagenet", tmp_path, input_shape=(3, 24, 20), train=True)
    assert ds.class_names == ["n01", "n02"] and ds.classes == 2 and ds.images == 6
    assert [label for _, label in ds.samples] == [0, 0, 0, 1, 1, 1]
    image, label = ds[4]
    assert image.shape == (3, 24, 20) and image.dtype == torch.float32 and label == 1
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 24, 20) and labels.tolist() == [0, 0, 0, 1]


def test_imagenet_train_crops_are_reproducible_with_a_seed(tmp_path):
    write_imagenet(tmp_path)
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)
    torch.manual_seed(0)
    first = [ds[i][0] for i in range(6)]
    torch.manual_seed(0)
    again = [ds[i][0] for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    torch.manual_seed(1)
    assert not all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))


def test_imagenet_val_is_a_deterministic_centre_crop(tmp_path):
    write_imagenet(tmp_path)
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=False)
    assert ds.split == "val" and ds.images == 6
    assert torch.equal(ds[0][0], ds[0][0]) and ds[0][0].shape == (3, 16, 16)


def test_transforms_give_the_spec_size_and_repeat_under_a_generator():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 90, 3), np.uint8))
    for size in [(24, 24), (16, 30), (64, 48)]:
        crops = [transforms.train_transform(img, size, generator=torch.Generator().manual_seed(7))
                 for _ in range(2)]
        assert crops[0].shape == (3, *size) and torch.equal(crops[0], crops[1])
        assert transforms.eval_transform(img, size).shape == (3, *size)
    assert transforms.resize_center_crop(img, (224, 224)).size == (224, 224)
    # shorter side to 256 for a 224 crop: the centre crop keeps 224/256 of it
    assert round(224 / transforms.CROP_FRACTION) == 256
    tall = Image.new("RGB", (3, 400))  # ten misses: the centred fallback crop still fits
    assert transforms.random_resized_crop(tall, (8, 8), generator=torch.Generator()).size == (8, 8)


def test_a_corrupt_jpeg_is_skipped_with_a_warning(tmp_path):
    write_imagenet(tmp_path)
    bad = tmp_path / "train" / "n01" / "n01_0.JPEG"  # the first sample
    bad.write_bytes(b"this is not a jpeg" * 10)
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)
    with pytest.warns(UserWarning, match="n01_0.JPEG"):
        image, label = ds[0]
    assert image.shape == (3, 16, 16) and label == 0  # n01_1 stood in
    assert ds.bad_files == [str(bad)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known bad: skipped silently from now on
        ds[0]
    assert ds.bad_files == [str(bad)]


def test_all_images_corrupt_is_a_data_error(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    for path in (tmp_path / "train").rglob("*.JPEG"):
        path.write_bytes(b"\xff\xd8garbage")
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 2 images"):
            ds[1]


# --- every bad input is a DataError that says where --------------------------------------------

@pytest.mark.parametrize("name", [d for d in DATASETS if d != "digits"])
def test_a_missing_folder_is_a_data_error_naming_it(tmp_path, name):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load(name, tmp_path / "nope", input_shape=CIFAR, train=True)


@pytest.mark.parametrize("name", [d for d in DATASETS if d != "digits"])
def test_an_empty_folder_is_a_data_error(tmp_path, name):
    with pytest.raises(DataError, match="expected"):
        load(name, tmp_path, input_shape=CIFAR, train=True)


def test_the_cifar_message_says_what_to_download(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)
    message = str(err.value)
    assert "data_batch_1..5 and test_batch" in message and "'python version'" in message
    assert "tar xzf" in message


def test_an_incomplete_cifar_folder_lists_what_is_missing(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)


def test_a_text_file_named_data_batch_1_is_a_data_error(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_1").write_text("hello, I am not a pickle\n")
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR-10 batch"):
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)


def test_cifar100_files_given_as_cifar10_are_a_data_error(tmp_path):
    write_cifar100(tmp_path)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes((tmp_path / "train").read_bytes())
    with pytest.raises(DataError, match="fine_labels"):
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)


def test_cifar_labels_out_of_range_are_a_data_error(tmp_path):
    write_cifar10(tmp_path)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="labels run 3..10, expected 0..9"):
        load("cifar10", tmp_path, input_shape=CIFAR, train=False)


def test_a_mat_without_x_and_y_is_a_data_error(tmp_path):
    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"images": np.zeros((2, 2))})
    with pytest.raises(DataError, match="no X and y variables.*images"):
        load("svhn", tmp_path, input_shape=CIFAR, train=True)


def test_a_garbage_mat_and_bad_svhn_labels_are_data_errors(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "extra_32x32.mat").write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match="extra_32x32.mat is not a readable .mat"):
        load("svhn", tmp_path, input_shape=CIFAR, train=True)
    write_svhn_mat(tmp_path / "test_32x32.mat", [0, 1])
    with pytest.raises(DataError, match="expected 1..10"):
        load("svhn", tmp_path, input_shape=CIFAR, train=False)


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 32, 32), (3, 32, 28)])
def test_cifar_and_svhn_cannot_fill_another_input_size(tmp_path, shape):
    write_cifar10(tmp_path)
    write_svhn(tmp_path)
    want = "x".join(map(str, shape))
    for name in ("cifar10", "svhn"):
        with pytest.raises(DataError, match=f"3x32x32 but the spec's input is {want}"):
            load(name, tmp_path, input_shape=shape, train=True)


def test_val_classes_must_match_train(tmp_path):
    write_imagenet(tmp_path, classes=("n01", "n02"), per_class=1, val_classes=("n01", "n03"))
    for train in (True, False):
        with pytest.raises(DataError, match="val lacks n02; val has extra n03"):
            load("imagenet", tmp_path, input_shape=(3, 16, 16), train=train)


def test_a_flat_val_folder_gets_a_hint(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    for path in list((tmp_path / "val").rglob("*.JPEG")):
        path.rename(tmp_path / "val" / path.name)
        path.parent.rmdir()
    with pytest.raises(DataError, match="holds images directly"):
        load("imagenet", tmp_path, input_shape=(3, 16, 16), train=False)


def test_imagenet_needs_rgb_input(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    with pytest.raises(DataError, match="1 channels"):
        load("imagenet", tmp_path, input_shape=(1, 16, 16), train=True)


def test_an_unknown_dataset_name_suggests_the_right_one():
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        load("cifar-10", "/data", input_shape=CIFAR, train=True)


def test_class_count_must_match_the_spec(tmp_path):
    write_cifar100(tmp_path)
    ds = load("cifar100", tmp_path, input_shape=CIFAR, train=False)
    check_classes(ds, 100)
    with pytest.raises(DataError) as err:
        check_classes(ds, 10)
    assert str(err.value) == ("the spec has 10 outputs but cifar100 has 100 classes; "
                              "use --set classes=100")
