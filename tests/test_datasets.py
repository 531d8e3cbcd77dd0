"""Tests for vqlib.datasets.

The torchvision datasets are exercised through torchvision's own loaders on
tiny files written here in each dataset's on-disk format; nothing is downloaded.
"""

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from vqlib.datasets import (
    EMBEDDED_DATASETS,
    TORCHVISION_DATASETS,
    Dataset,
    DatasetUnavailableError,
    load_dataset,
)

torchvision_datasets = pytest.importorskip("torchvision.datasets")


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _images(rng, shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _assert_pixels(x, expected_uint8):
    assert x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = torch.from_numpy(np.ascontiguousarray(expected_uint8)).float() / 255.0
    torch.testing.assert_close(x, expected)


# --------------------------------------------------------------------- MNIST
def _write_idx(path, array: np.ndarray):
    """Big-endian IDX file of uint8 (type code 0x08)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {"train": 20, "t10k": 10}
    written = {}
    for prefix, n in splits.items():
        images, labels = _images(rng, (n, 28, 28)), rng.integers(0, 10, n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (images, labels)

    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    assert ds.input_shape == (784,)
    for x, y, prefix in [(ds.x_train, ds.y_train, "train"), (ds.x_test, ds.y_test, "t10k")]:
        images, labels = written[prefix]
        _assert_pixels(x, images.reshape(len(images), -1))
        assert y.dtype == torch.int64
        assert y.tolist() == labels.tolist()
    # One pixel by hand: row 3, column 5 of the second training image.
    assert ds.x_train[1, 3 * 28 + 5].item() == pytest.approx(written["train"][0][1, 3, 5] / 255)


# ---------------------------------------------------------------------- SVHN
def test_svhn_from_mat_files(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(1)
    split_list = {k: list(v) for k, v in torchvision_datasets.SVHN.split_list.items()}
    written = {}
    for split, n in [("train", 12), ("test", 6)]:
        images = _images(rng, (n, 3, 32, 32))  # what we expect back: (N, C, H, W)
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)  # SVHN: 10 means 0
        path = tmp_path / f"{split}_32x32.mat"
        scipy_io.savemat(path, {"X": images.transpose(2, 3, 1, 0), "y": y})  # (H, W, C, N)
        split_list[split][2] = _md5(path)
        written[split] = (images, digits)
    monkeypatch.setattr(torchvision_datasets.SVHN, "split_list", split_list)

    ds = load_dataset("svhn", data_dir=tmp_path, download=False)
    assert ds.x_train.shape == (12, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    for x, y, split in [(ds.x_train, ds.y_train, "train"), (ds.x_test, ds.y_test, "test")]:
        images, digits = written[split]
        _assert_pixels(x, images)
        assert y.dtype == torch.int64
        assert y.tolist() == digits.tolist()
    assert ds.y_train[0].item() == 0 and ds.y_train[10].item() == 0  # label 10 became 0
    images = written["train"][0]
    assert ds.x_train[4, 2, 7, 9].item() == pytest.approx(images[4, 2, 7, 9] / 255)


# ------------------------------------------------------------------ CIFAR-10
def test_cifar10_from_pickled_batches(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    cls = torchvision_datasets.CIFAR10
    folder = tmp_path / cls.base_folder
    folder.mkdir()

    def write(filename, obj):
        path = folder / filename
        path.write_bytes(pickle.dumps(obj))
        return _md5(path)

    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    batches, md5s = {}, {}
    for filename in train_names + ["test_batch"]:
        # CIFAR rows are 3072 bytes: 1024 red, then green, then blue, each row-major.
        images, labels = _images(rng, (4, 3, 32, 32)), rng.integers(0, 10, 4).tolist()
        entry = {"data": images.reshape(4, -1), "labels": labels, "batch_label": filename}
        batches[filename], md5s[filename] = (images, labels), write(filename, entry)
    meta_md5 = write("batches.meta", {"label_names": [str(i) for i in range(10)], "num_vis": 3072})

    monkeypatch.setattr(cls, "train_list", [[f, md5s[f]] for f in train_names])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})

    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.is_contiguous()
    _assert_pixels(ds.x_train, np.concatenate([batches[f][0] for f in train_names]))
    _assert_pixels(ds.x_test, batches["test_batch"][0])
    assert ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == sum((batches[f][1] for f in train_names), [])
    assert ds.y_test.tolist() == batches["test_batch"][1]
    # Blue channel, row 5, column 17 of the first test image: byte 2*1024 + 5*32 + 17.
    raw_row = batches["test_batch"][0][0].reshape(-1)
    assert ds.x_test[0, 2, 5, 17].item() == pytest.approx(raw_row[2 * 1024 + 5 * 32 + 17] / 255)


# ------------------------------------------------------------ missing files
@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_missing_dataset_raises_helpful_error(tmp_path, name):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(name, data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message
    assert repr(name) in message
    assert str((tmp_path / "nowhere").resolve()) in message
    assert "mnist5k" in message and "digits" in message


def test_corrupted_file_raises_helpful_error(tmp_path):
    # A real-looking file name with the wrong content fails torchvision's MD5 check.
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetUnavailableError, match="svhn"):
        load_dataset("svhn", data_dir=tmp_path, download=False)


# ---------------------------------------------------------- embedded digits
def test_mnist5k_split():
    ds = load_dataset("mnist5k")
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [100] * 10
    # Train and test hold different images (no duplicated rows across the split).
    train_rows = {row.tobytes() for row in ds.x_train.numpy()}
    assert not any(row.tobytes() in train_rows for row in ds.x_test.numpy())


def test_mnist5k_is_deterministic_and_not_shared():
    a, b = load_dataset("mnist5k"), load_dataset("mnist5k")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    a.x_train.zero_()  # callers may modify their tensors without touching the cache
    assert load_dataset("mnist5k").x_train.max().item() == 1.0


def test_digits_split():
    ds = load_dataset("digits", data_dir="ignored", download=False)
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.input_shape == (64,)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.x_train.min().item() == 0.0 and ds.x_train.max().item() == 1.0
    assert set(ds.y_test.tolist()) == set(range(10))


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError) as info:
        load_dataset("foo")
    message = str(info.value)
    assert "dataset='foo'" in message
    for name in TORCHVISION_DATASETS + EMBEDDED_DATASETS:
        assert repr(name) in message


def test_dataset_to_and_properties():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.num_classes == 10
    moved = ds.to("cpu")
    assert moved is not ds and isinstance(moved, Dataset)
    assert moved.name == "digits" and moved.input_shape == (64,)
    assert all(t.device.type == "cpu" for t in (moved.x_train, moved.y_train, moved.x_test, moved.y_test))
    assert torch.equal(moved.x_test, ds.x_test)


def test_binarised_digits_are_static_bernoulli_draws_of_the_grey_levels():
    from vqlib.datasets import BINARY_DATASETS, binarise

    grey, small = load_dataset("mnist5k"), load_dataset("binary_mnist5k_14")
    assert BINARY_DATASETS["binary_mnist5k_14"] == ("mnist5k", 14)
    assert small.input_shape == (196,) and set(small.x_train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(small.x_train, load_dataset("binary_mnist5k_14").x_train)  # the same draw every time
    assert torch.equal(small.y_test, grey.y_test)
    pooled = torch.nn.functional.avg_pool2d(grey.x_train.view(-1, 1, 28, 28), 2).reshape(len(grey.x_train), -1)
    # each pixel is Bernoulli(its pooled grey level): the means agree within a few standard errors
    n = pooled.numel()
    assert abs(float(small.x_train.mean() - pooled.mean())) < 5 * float((pooled * (1 - pooled)).mean().sqrt()) / n ** 0.5
    full = load_dataset("binary_mnist5k")
    assert full.input_shape == (784,)
    assert torch.all(full.x_train[grey.x_train == 0] == 0) and torch.all(full.x_train[grey.x_train == 1] == 1)
    with pytest.raises(ValueError, match="cannot be binarised to 14x14"):
        binarise(load_dataset("digits"), "binary_digits", 14)
