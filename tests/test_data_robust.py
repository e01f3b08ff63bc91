"""Bad data on disk never costs a traceback, a hang or unbounded memory: an image whose header
gives an absurd size is skipped by name before it is decoded, a pickled CIFAR batch cannot make
more memory than a small multiple of its size, an unreadable ImageNet tree is one DataError that
names the path, and a class-count mismatch gives advice that works for the spec at hand."""

import codecs
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cliquegraph.elaborate import elaborate
from cliquegraph.train import DataError, check_classes, load

from test_data import write_cifar10, write_imagenet

CIFAR = (3, 32, 32)


def write_png(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 90)).save(path)


class Call:
    """Pickles as a call of `fn` on `args`: the way to write a crafted pickle by hand."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


NUMPY_RECONSTRUCT = np.zeros(0).__reduce__()[0]
NUMPY_FROMBUFFER = np.zeros(0).__reduce_ex__(5)[0]


# --- images: the header's size decides, before any pixel is decoded -----------------------------

def test_a_long_thin_strip_in_val_is_skipped_by_name(tmp_path):
    write_imagenet(tmp_path)
    strip = tmp_path / "val" / "n01" / "a_strip.png"  # sorts first in its class
    write_png(strip, (1, 30_000))
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=False)
    with pytest.warns(UserWarning, match=r"a_strip\.png: it is 1 x 30000 pixels"):
        image, label = ds[0]
    assert image.shape == (3, 16, 16) and label == 0
    assert ds.bad_files == [str(strip)]


def test_images_over_pillows_pixel_limit_are_skipped_by_name_not_warned_about(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above, raises above 2x
    for split in ("train", "val"):
        write_png(tmp_path / split / "n01" / "a.png", (20, 20))
        write_png(tmp_path / split / "n01" / "b_warned.png", (40, 40))
        write_png(tmp_path / split / "n01" / "c_refused.png", (80, 80))
        write_png(tmp_path / split / "n02" / "a.png", (20, 20))
    ds = load("imagenet", tmp_path, input_shape=(3, 8, 8), train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, label = ds[1]
    assert image.shape == (3, 8, 8) and label == 1  # n02/a.png stood in for both
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    said = " ".join(str(w.message) for w in caught)
    assert "b_warned.png: it is too large" in said and "c_refused.png: it is too large" in said
    assert [os.path.basename(p) for p in ds.bad_files] == ["b_warned.png", "c_refused.png"]


def test_the_centre_crop_of_a_long_strip_takes_no_more_memory_than_the_strip():
    # In a child whose address space is capped 300 MB above what it has after the imports:
    # resizing the whole 1 x 600,000 strip for a 16 x 16 crop would need 778 MB.
    child = textwrap.dedent("""
        import re, resource
        from PIL import Image
        from cliquegraph.train import transforms
        strip = Image.new("RGB", (1, 600_000), (1, 2, 3))
        used = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        cap = used * 1024 + 300 * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        crop = transforms.resize_center_crop(strip, (16, 16))
        print(crop.size, crop.getpixel((3, 3)))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(16,", "16)", "(1,", "2,", "3)"]


# --- CIFAR pickles: bytes are fine, memory bombs are refused while the pickle is read -----------

def cifar_batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
def test_python3_pickles_holding_empty_bytes_and_bytearrays_load(tmp_path, protocol):
    write_cifar10(tmp_path)
    data, labels = cifar_batch()
    batch = {b"data": data, b"labels": labels, b"batch_label": b"",
             b"filenames": [bytearray(b"a.png"), bytearray(), b""] + [b"f.png"] * 3,
             b"mean": np.zeros(0, np.uint8)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load("cifar10", tmp_path, input_shape=CIFAR, train=True).tensors
    assert torch.equal(x[:6], torch.from_numpy(data).view(6, 3, 32, 32))
    assert y[:6].tolist() == labels


def doubled_list(depth):
    """A list of 2**depth zeros as nested pairs that share each level: a pickle of ~depth * 8
    bytes, which np.asarray would expand into 2**depth int64."""
    nested = [0]
    for _ in range(depth):
        nested = [nested, nested]
    return nested


def hex_chain(times):
    """bytes that the pickle doubles `times` times through the hex codec."""
    value = b"0123456789abcdef"
    for _ in range(times):
        value = Call(codecs.encode, value, "hex")
    return value


def copies(text, times):
    """`times` separate bytes made from one shared string."""
    return [Call(codecs.encode, text, "latin1") for _ in range(times)]


def memo_claim(index):
    """A 9-byte pickle of None that puts it in memo slot `index` (the C unpickler allocates and
    zeroes a table of 2 * index slots first)."""
    return b"\x80\x02N" + b"r" + struct.pack("<I", index) + b"."


BOMBS = {
    "a labels list of shared lists": lambda: pickle.dumps(
        {b"data": cifar_batch()[0], b"labels": doubled_list(21)}, protocol=2),
    "an object array of 8M slots": lambda: pickle.dumps(
        {b"data": cifar_batch()[0],
         b"labels": Call(NUMPY_RECONSTRUCT, np.ndarray, (2 ** 23,), "O")}, protocol=2),
    "bytes doubled by the hex codec": lambda: pickle.dumps(
        {b"data": cifar_batch()[0], b"labels": hex_chain(21)}, protocol=2),
    "one string copied 500 times": lambda: pickle.dumps(
        {b"data": cifar_batch()[0], b"labels": copies("x" * 2 ** 16, 500)}, protocol=2),
    "a memo slot 8M away": lambda: memo_claim(2 ** 23),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_pickle_that_would_multiply_its_size_in_memory_is_refused_early(tmp_path, bomb):
    write_cifar10(tmp_path)
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(BOMBS[bomb]())
    assert bad.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=re.escape(str(bad))):
            load("cifar10", tmp_path, input_shape=CIFAR, train=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20, f"{peak / 2 ** 20:.0f} MB for a {bad.stat().st_size} byte file"


def test_cifar_messages_show_no_object_addresses(tmp_path):
    write_cifar10(tmp_path)
    data, labels = cifar_batch()
    batch = {b"data": Call(NUMPY_RECONSTRUCT, np.ndarray, (0,), Call(np.dtype, NUMPY_FROMBUFFER)),
             b"labels": labels}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="data_batch_1") as err:
        load("cifar10", tmp_path, input_shape=CIFAR, train=True)
    assert not re.search(r"0x[0-9a-f]{6}", str(err.value)), str(err.value)


# --- ImageNet trees that cannot be read ---------------------------------------------------------

def test_a_symbolic_link_loop_for_a_class_folder_is_a_data_error_naming_it(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    os.symlink("n03", tmp_path / "train" / "n03")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "train" / "n03"))
                       + ".*symbolic link"):
        load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)


def test_a_symbolic_link_loop_for_an_image_is_a_data_error_naming_it(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    loop = tmp_path / "val" / "n01" / "loop.JPEG"
    os.symlink("loop.JPEG", loop)
    with pytest.raises(DataError, match=re.escape(str(loop)) + ".*symbolic link"):
        load("imagenet", tmp_path, input_shape=(3, 16, 16), train=False)


def test_an_unreadable_class_folder_is_a_data_error_naming_it(tmp_path, monkeypatch):
    write_imagenet(tmp_path, per_class=1)
    locked = tmp_path / "train" / "n02"
    scandir = os.scandir

    def as_if_chmod_000(path):  # tests may run as root, whom chmod does not stop
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", as_if_chmod_000)
    with pytest.raises(DataError, match=re.escape(str(locked)) + ": permission denied"):
        load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_a_chmod_000_class_folder_is_a_data_error_naming_it(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    locked = tmp_path / "train" / "n02"
    locked.chmod(0)
    try:
        with pytest.raises(DataError, match=re.escape(str(locked)) + ": permission denied"):
            load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)
    finally:
        locked.chmod(0o755)


def test_a_data_error_in_a_dataloader_worker_reaches_the_user_as_its_own_message(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    for path in (tmp_path / "train").rglob("*.JPEG"):
        path.write_bytes(b"\xff\xd8garbage")
    ds = load("imagenet", tmp_path, input_shape=(3, 16, 16), train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as here:
            ds[0]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(DataError) as there:
        next(iter(loader))
    assert str(there.value) == str(here.value)
    assert str(there.value).startswith("none of the 2 images")


# --- class counts: advice that works for the spec -----------------------------------------------

def write_spec(tmp_path, head, params=""):
    path = tmp_path / "tiny.clq"
    path.write_text(f"network tiny {{\n{params}  input 1x8x8\n"
                    f"  blocks 1 {{ layers 2; width 4 }}\n  head {{ {head} }}\n}}\n")
    return path


def test_a_spec_without_a_classes_param_is_told_to_change_its_fc_line(tmp_path):
    digits = load("digits", None, input_shape=(1, 8, 8), train=False)
    net = elaborate(write_spec(tmp_path, "pool global; fc 5"))
    with pytest.raises(DataError) as err:
        check_classes(digits, net.outputs, net=net)
    message = str(err.value)
    assert message.startswith("the spec has 5 outputs but digits has 10 classes")
    assert "`fc 10`" in message and "--set" not in message
    check_classes(digits, elaborate(write_spec(tmp_path, "pool global; fc 10")).outputs)


def test_a_spec_with_a_classes_param_is_told_to_set_it_and_that_works(tmp_path):
    digits = load("digits", None, input_shape=(1, 8, 8), train=False)
    path = write_spec(tmp_path, "pool global; fc classes", params="  param classes = 5\n")
    net = elaborate(path)
    with pytest.raises(DataError, match=r"use --set classes=10$"):
        check_classes(digits, net.outputs, net=net)
    fixed = elaborate(path, {"classes": 10})
    check_classes(digits, fixed.outputs, net=fixed)
