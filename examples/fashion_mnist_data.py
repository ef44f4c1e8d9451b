"""Loads Fashion-MNIST from local IDX files, Debian's package, or Keras.

`load_fashion_mnist()` tries, in order:

1. `data_dir`, or else the directory in `$FASHION_MNIST_DIR`, holding the four
   standard files `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`;
2. Debian's `dataset-fashion-mnist` package, in `/usr/share/datasets/
   fashion-mnist` (`apt-get install dataset-fashion-mnist`);
3. `keras.datasets.fashion_mnist.load_data()`, which uses the Keras cache
   (`$KERAS_HOME/datasets/fashion-mnist`) or downloads the files.

The IDX files are read with numpy and gzip only.

`synthetic_fashion_mnist()` generates data of the same shapes and types (ten
classes of noisy blurred prototypes), for tests and machines without the data
set.
"""

import gzip
import os
import warnings
import zlib

import numpy as np

ENV_VAR = "FASHION_MNIST_DIR"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_LABELS_MAGIC = 2049
_IMAGES_MAGIC = 2051

Split = tuple[np.ndarray, np.ndarray]


def load_fashion_mnist(data_dir: str | None = None) -> tuple[Split, Split]:
    """Returns Fashion-MNIST as `(x_train, y_train), (x_test, y_test)`.

    Images are float32 in `[0, 1]` with shape `(N, 28, 28)`; labels are int64
    class ids in `[0, 9]`. There are 60,000 training and 10,000 test
    examples.

    Args:
        data_dir: A directory holding the four IDX `.gz` files. Defaults to
            `None`: `$FASHION_MNIST_DIR` if set, then the other sources.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.

    Raises:
        RuntimeError: If no source works; the message lists each source
            tried, why it failed, and how to get the data.
    """
    tried: list[str] = []
    local_dir = data_dir or os.environ.get(ENV_VAR)
    if local_dir:
        origin = "data_dir" if data_dir else f"${ENV_VAR}"
        try:
            return _load_from_dir(local_dir)
        except (OSError, ValueError) as error:
            tried.append(f"{origin} {local_dir!r}: {error}")
            warnings.warn(
                f"Could not read Fashion-MNIST from {origin} {local_dir!r} "
                f"({error}); trying the other sources.",
                stacklevel=2,
            )
    try:
        return _load_from_dir(DEBIAN_DIR)
    except (OSError, ValueError) as error:
        tried.append(f"Debian package dir {DEBIAN_DIR!r}: {error}")
    try:
        return _load_from_keras()
    except Exception as error:  # Keras raises a bare Exception offline.
        tried.append(f"keras.datasets.fashion_mnist.load_data(): {error}")
    raise RuntimeError(_not_found_message(tried))


def synthetic_fashion_mnist(
    num_train: int, num_test: int, seed: int = 0
) -> tuple[Split, Split]:
    """Returns generated data shaped and typed like `load_fashion_mnist()`.

    Each of the ten classes has a random smooth 28x28 prototype; an example
    is its class's prototype, randomly shifted by up to 2 pixels, plus noise,
    clipped to `[0, 1]`. Classes are balanced and learnable but not
    trivially separable, so accuracies are neither 0.1 nor 1.0 after a few
    steps.

    Args:
        num_train: Number of training examples.
        num_test: Number of test examples.
        seed: Seed of the generator.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images in `[0, 1]`
        of shape `(N, 28, 28)` and int64 labels in `[0, 9]`.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, (10, 7, 7))
    prototypes = np.kron(coarse, np.ones((4, 4)))  # (10, 28, 28), blocky

    def split(size: int) -> Split:
        labels = rng.integers(0, 10, size)
        images = prototypes[labels]
        shifts = rng.integers(-2, 3, (size, 2))
        for i, (dy, dx) in enumerate(shifts):
            images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
        images = images + rng.normal(0.0, 0.25, images.shape)
        images = np.clip(images, 0.0, 1.0).astype(np.float32)
        return images, labels.astype(np.int64)

    return split(num_train), split(num_test)


def read_idx_images(path: str) -> np.ndarray:
    """Reads a gzipped IDX3 image file as a uint8 array `(N, rows, cols)`.

    Raises:
        ValueError: If the file is not a valid IDX3 image file or its gzip
            data is truncated or corrupt.
        OSError: If the file cannot be read or is not gzip data.
    """
    data = _read_gzip(path)
    if len(data) < 16:
        raise ValueError(f"{path}: too short for an IDX3 header (16 bytes)")
    magic, count, rows, cols = np.frombuffer(data, ">u4", count=4)
    if magic != _IMAGES_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (IDX3 images have "
            f"{_IMAGES_MAGIC})"
        )
    expected = int(count) * int(rows) * int(cols)
    if len(data) - 16 != expected:
        raise ValueError(
            f"{path}: header says {count}x{rows}x{cols} = {expected} bytes "
            f"of pixels, file has {len(data) - 16}"
        )
    pixels = np.frombuffer(data, np.uint8, offset=16)
    return pixels.reshape(int(count), int(rows), int(cols))


def read_idx_labels(path: str) -> np.ndarray:
    """Reads a gzipped IDX1 label file as a uint8 array `(N,)`.

    Raises:
        ValueError: If the file is not a valid IDX1 label file or its gzip
            data is truncated or corrupt.
        OSError: If the file cannot be read or is not gzip data.
    """
    data = _read_gzip(path)
    if len(data) < 8:
        raise ValueError(f"{path}: too short for an IDX1 header (8 bytes)")
    magic, count = np.frombuffer(data, ">u4", count=2)
    if magic != _LABELS_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (IDX1 labels have "
            f"{_LABELS_MAGIC})"
        )
    if len(data) - 8 != count:
        raise ValueError(
            f"{path}: header says {count} labels, file has {len(data) - 8}"
        )
    return np.frombuffer(data, np.uint8, offset=8)


def _read_gzip(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from error


def _load_from_dir(directory: str) -> tuple[Split, Split]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory {directory!r}")
    paths = {key: os.path.join(directory, f) for key, f in _FILES.items()}
    missing = [_FILES[k] for k, p in paths.items() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}")
    train = (
        read_idx_images(paths["train_images"]),
        read_idx_labels(paths["train_labels"]),
    )
    test = (
        read_idx_images(paths["test_images"]),
        read_idx_labels(paths["test_labels"]),
    )
    return _normalize(*train), _normalize(*test)


def _load_from_keras() -> tuple[Split, Split]:
    import keras

    train, test = keras.datasets.fashion_mnist.load_data()
    return _normalize(*train), _normalize(*test)


def _normalize(images: np.ndarray, labels: np.ndarray) -> Split:
    if len(images) != len(labels):
        raise ValueError(
            f"{len(images)} images but {len(labels)} labels; the image and "
            "label files do not belong together"
        )
    if images.shape[1:] != (28, 28):
        raise ValueError(
            f"images have shape {images.shape[1:]}, expected (28, 28)"
        )
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def _not_found_message(tried: list[str]) -> str:
    lines = "\n".join(f"  - {entry}" for entry in tried)
    return (
        "Could not load Fashion-MNIST. Tried:\n"
        f"{lines}\n"
        "To fix it, do one of:\n"
        "  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist\n"
        f"  - put the four files {', '.join(_FILES.values())} in a directory "
        f"and pass it as data_dir (--data_dir) or set ${ENV_VAR}\n"
        "  - connect to the internet so Keras can download the data set"
    )
