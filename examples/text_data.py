"""A word-order classification task on Penn Treebank sentences.

Each example is one sentence of the treebank (a piece of at most
`seq_len - 2` words: longer sentences are cut into consecutive pieces;
pieces of fewer than `MIN_WORDS` words are left out), either as written
(label 1) or with its words in a random order (label 0), half and half.
Both versions of a sentence hold the same words, so the two classes have
the same words, lengths and word counts: a model that sees a sentence as a
bag of words scores 50%, and only word order tells them apart.

Training examples are drawn afresh for every batch (`training_batches`)
from the treebank's train split: a random sentence, a random label, a new
shuffle (so there is no fixed labelling to learn by heart). The test
examples are fixed: each sentence of the test split once, half of them (at
random) shuffled. Pieces made of one repeated word (no other order) are
left out of both splits.

`word_order_task()` reads the text of the `treebank` package (through
`ptb_data.load_ptb()`) or, for machines without it, generates it with
`ptb_data.synthetic_corpus()` (a random bigram model, whose `<eos>` ends
its "sentences"). Examples are BERT-style token ids, `[CLS] w1 ... wn
[SEP]` then `[PAD]`s. The vocabulary is the `vocab_size - 4` most frequent
words of the training split after the four special tokens; other words
become `[UNK]`.
"""

import collections
import dataclasses
from collections.abc import Iterator

import numpy as np

try:  # Run as a script: this file's directory is on sys.path.
    import ptb_data
except ImportError:  # Imported as `examples.text_data`.
    from examples import ptb_data

PAD, CLS, SEP, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
MIN_WORDS = 4
"""The shortest passage (shorter ones have few orders to tell apart)."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """BERT inputs and labels (1: as written, 0: shuffled)."""

    token_ids: np.ndarray  # int32 (N, seq_len): [CLS] words [SEP] [PAD]...
    padding_mask: np.ndarray  # int32 (N, seq_len): 1 on [CLS], words, [SEP]
    labels: np.ndarray  # int32 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self) -> dict[str, np.ndarray]:
        """The input dict of a KerasHub BERT model (one segment)."""
        return {
            "token_ids": self.token_ids,
            "segment_ids": np.zeros_like(self.token_ids),
            "padding_mask": self.padding_mask,
        }


@dataclasses.dataclass(frozen=True)
class WordOrderTask:
    """The training sentences, the test examples and the vocabulary.

    Attributes:
        train_sentences: Token ids of each training sentence (words only:
            no special token but `[UNK]`).
        test: The fixed test examples.
        vocabulary: Token of each id, the special tokens first.
        seq_len: Tokens per example.
        source: `"Penn Treebank"` or `"synthetic bigram corpus"`.
    """

    train_sentences: list[np.ndarray]
    test: Examples
    vocabulary: tuple[str, ...]
    seq_len: int
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)


def split_sentences(
    ids: np.ndarray, eos_id: int, max_words: int
) -> list[np.ndarray]:
    """Splits a word stream at `eos_id` (dropped) into sentences, cuts
    longer ones into consecutive pieces of at most `max_words` words, and
    leaves out pieces of fewer than `MIN_WORDS` words."""
    if max_words < MIN_WORDS:
        raise ValueError(
            f"max_words must be >= {MIN_WORDS}. Received: {max_words}"
        )
    pieces = []
    for sentence in np.split(ids, np.flatnonzero(ids == eos_id)):
        sentence = sentence[sentence != eos_id]
        for start in range(0, len(sentence), max_words):
            piece = sentence[start : start + max_words]
            if len(piece) >= MIN_WORDS:
                pieces.append(piece)
    return pieces


def shuffle_words(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns `tokens` in a random order that differs from the original.

    Raises:
        ValueError: If all tokens are equal (no other order exists).
    """
    if len(np.unique(tokens)) < 2:
        raise ValueError(f"No other order of tokens {tokens.tolist()}")
    while True:
        shuffled = rng.permutation(tokens)
        if not np.array_equal(shuffled, tokens):
            return shuffled


def make_examples(
    sentences: list[np.ndarray], seq_len: int, rng: np.random.Generator
) -> Examples:
    """One example per sentence, half of them shuffled.

    Labels 1 and 0 come in equal numbers (the extra one of an odd count is
    1), at random positions; a 0 sentence gets a random order of its words
    that differs from the original.

    Raises:
        ValueError: If a sentence does not fit `seq_len` with `[CLS]` and
            `[SEP]`, or has all words equal.
    """
    count = len(sentences)
    labels = (rng.permutation(count) >= count // 2).astype(np.int32)
    token_ids = np.full((count, seq_len), PAD, np.int32)
    for i, (words, label) in enumerate(zip(sentences, labels, strict=True)):
        if len(words) > seq_len - 2:
            raise ValueError(
                f"A sentence of {len(words)} words does not fit "
                f"seq_len={seq_len} with [CLS] and [SEP]."
            )
        if not label:
            words = shuffle_words(words, rng)
        token_ids[i, 0] = CLS
        token_ids[i, 1 : len(words) + 1] = words
        token_ids[i, len(words) + 1] = SEP
    padding_mask = (token_ids != PAD).astype(np.int32)
    return Examples(token_ids, padding_mask, labels)


def training_batches(
    task: WordOrderTask, batch_size: int, seed: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yields `(inputs, labels)` batches of new training examples for ever
    (the same batches for the same seed): random sentences, each with a
    new label and, if shuffled, a new order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: {batch_size}")
    rng = np.random.default_rng(seed)
    sentences = task.train_sentences
    while True:
        chosen = rng.integers(0, len(sentences), batch_size)
        examples = make_examples(
            [sentences[i] for i in chosen], task.seq_len, rng
        )
        yield examples.inputs(), examples.labels


def word_order_task(
    data: str,
    vocab_size: int,
    seq_len: int,
    num_test: int | None = None,
    seed: int = 0,
) -> WordOrderTask:
    """Builds the word-order task.

    Args:
        data: `"real"` (the Penn Treebank, from the `treebank` package) or
            `"synthetic"` (a random bigram corpus, no package needed).
        vocab_size: Tokens of the vocabulary, the 4 special ones included
            (fewer when the training split has fewer distinct words).
        seq_len: Tokens per example: a sentence piece has at most
            `seq_len - 2` words.
        num_test: Test sentences kept, drawn at random (`None`: all).
        seed: Seed of the test examples.

    Raises:
        RuntimeError: If `data` is `"real"` and `treebank` is not installed
            (the message says how to install it).
        ValueError: If an argument is out of range.
    """
    if data == "real":
        corpus, source = ptb_data.load_ptb(), "Penn Treebank"
    elif data == "synthetic":
        corpus = ptb_data.synthetic_corpus(
            vocab_size=500, num_train=200_000, num_eval=20_000, seed=seed
        )
        source = "synthetic bigram corpus"
    else:
        raise ValueError(
            f"data must be 'real' or 'synthetic'. Received: {data!r}"
        )
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be > {len(SPECIAL_TOKENS)}. Received: "
            f"{vocab_size}"
        )
    eos_id = corpus.vocabulary.index(ptb_data.EOS)
    counts = collections.Counter(corpus.train[corpus.train != eos_id].tolist())
    num_words = min(vocab_size - len(SPECIAL_TOKENS), len(counts))
    # Most frequent first; ties by word id, so ids are the same everywhere.
    kept = sorted(counts, key=lambda word: (-counts[word], word))[:num_words]
    lookup = np.full(corpus.vocab_size, UNK, np.int32)
    lookup[kept] = np.arange(num_words) + len(SPECIAL_TOKENS)
    vocabulary = SPECIAL_TOKENS + tuple(corpus.vocabulary[w] for w in kept)

    def sentences(ids: np.ndarray) -> list[np.ndarray]:
        pieces = [lookup[s] for s in split_sentences(ids, eos_id, seq_len - 2)]
        # A piece of one repeated token has no other order.
        return [s for s in pieces if len(np.unique(s)) >= 2]

    rng = np.random.default_rng(seed)
    test = sentences(corpus.test)
    if num_test is not None and num_test < len(test):
        chosen = np.sort(rng.choice(len(test), num_test, replace=False))
        test = [test[i] for i in chosen]
    return WordOrderTask(
        train_sentences=sentences(corpus.train),
        test=make_examples(test, seq_len, rng),
        vocabulary=vocabulary,
        seq_len=seq_len,
        source=source,
    )
