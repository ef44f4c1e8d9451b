"""Real models, end to end: KerasHub backbones and a task, keras.applications.

Every case builds a tiny model with random weights (no presets, nothing
downloaded), prunes it with `prune_low_magnitude`, fits it until its
schedule reaches `TARGET`, and checks, in order:

1. the source model is unchanged and the pruned model is a new model;
2. every mask keeps exactly `round_half_even(n * (1 - TARGET))` entries
   (more only on a magnitude tie at the threshold), the threshold is the
   smallest kept magnitude, and masked weights are zero;
3. the pruned weights are kernels and cover at least `MIN_COVERAGE` of the
   model's kernel parameters (see `_kernel_weights`);
4. the `.keras` file loads in a fresh interpreter (`real_models_worker.py`,
   started at once and run while the test goes on), with the same outputs
   and optimizer state, and training resumes with `UpdatePruningStep`
   without any mask regrowing;
5. `strip_pruning` gives a plain model with bit-identical outputs, and so
   does its `.keras` round trip;
6. the stripped model exports to TFLite with matching outputs (Gemma and
   Llama need TF Select ops: by default the export fails with an error
   naming `select_tf_ops`; with it the file is written, and since TF's pip
   interpreter has no Flex delegate a SavedModel export is compared);
7. `sparsity_report` counts the masks' zeros and finds the model sparse.

The cases cover bare backbones pruned directly, backbones nested in a
user's Functional model, a KerasHub task, and five keras.applications
networks. Every case runs every step; the four large networks are marked
`slow`. Each test prints the wall and CPU seconds of its stages (`pytest -s`).
"""

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import real_models_worker as rmw
import tensorflow as tf
from reference import as_numpy
from reference import expected_kept

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

TARGET = 0.8
FIT_STEPS = 2  # The schedules below reach TARGET at the last step.
SAMPLES = 8
SEQUENCE_LENGTH = 8
VOCABULARY = 64
MIN_COVERAGE = 0.8
TFLITE_ATOL = 1e-4  # Times the outputs' largest magnitude (at least 1).
# Leaf names of the wrapper's variables (`kernel_mask`, ...).
_PRUNING_VARIABLES = ("mask", "threshold", "last_mask_update_step")


def _polynomial():
    return mp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=TARGET,
        begin_step=0,
        end_step=FIT_STEPS,
        frequency=1,
    )


def _constant():
    return mp.ConstantSparsity(TARGET, begin_step=0, frequency=1)


# --- Models -----------------------------------------------------------------


def _hub():
    return pytest.importorskip("keras_hub")


def _bert_backbone():
    return _hub().models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
    )


def _token_inputs(names):
    return {
        name: keras.Input((None,), dtype="int32", name=name) for name in names
    }


def _with_head(backbone, input_names, classes=2):
    """A user's Functional model: the backbone, mean pooling, a Dense head."""
    inputs = _token_inputs(input_names)
    features = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(features)
    outputs = keras.layers.Dense(classes, name="head")(pooled)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_with_head")


def _gpt2_with_head():
    backbone = _hub().models.GPT2Backbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
    )
    return _with_head(backbone, ["token_ids", "padding_mask"])


def _gemma_backbone():
    return _hub().models.GemmaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=16,
    )


def _llama_with_head():
    backbone = _hub().models.LlamaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
    )
    return _with_head(backbone, ["token_ids", "padding_mask"])


def _vit_backbone():
    return _hub().models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
    )


def _bert_classifier():
    return _hub().models.BertTextClassifier(
        _bert_backbone(), num_classes=2, preprocessor=None
    )


def _application(name):
    def build():
        return getattr(keras.applications, name)(
            weights=None, input_shape=(32, 32, 3), classes=10
        )

    return build


# --- Data -------------------------------------------------------------------


def _tokens(with_segments=False):
    rng = np.random.default_rng(0)
    shape = (SAMPLES, SEQUENCE_LENGTH)
    inputs = {
        "token_ids": rng.integers(0, VOCABULARY, shape).astype("int32"),
        "padding_mask": np.ones(shape, "int32"),
    }
    inputs["padding_mask"][::2, -3:] = 0  # Half the rows are padded.
    if with_segments:
        segments = np.zeros(shape, "int32")
        segments[:, SEQUENCE_LENGTH // 2 :] = 1
        inputs["segment_ids"] = segments
    return inputs


def _images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (SAMPLES, 32, 32, 3)).astype("float32")


def _regression_targets(model, inputs):
    """Random targets shaped like the model's outputs (an array or dict)."""
    rng = np.random.default_rng(1)
    return keras.tree.map_structure(
        lambda out: rng.normal(size=out.shape).astype("float32"),
        rmw.outputs(model, inputs),
    )


def _class_targets(model, inputs):
    classes = model.output_shape[-1]
    return np.arange(SAMPLES, dtype="int32") % classes


# --- Cases ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One model and how to train and export it.

    Attributes:
        build: Returns the built, unpruned model.
        inputs: Returns its inputs (an array or a dict of arrays).
        targets: `(model, inputs) -> targets`.
        loss: The compile loss.
        schedule: Returns the pruning schedule.
        optimizer: Returns the optimizer: Adam on some small models, so the
            reload must restore slot variables; SGD elsewhere (tracing
            Adam's update for every variable costs CPU seconds per model,
            and quadruples a large model's `.keras` file).
        hub: Whether the model comes from KerasHub.
        tflite: `"run"` (one input and output: `run_tflite`), `"signature"`
            (dict inputs or outputs: the TFLite signature runner) or
            `"needs_select_ops"` (conversion with builtin ops fails with an
            error naming `select_tf_ops`; with it the file holds Flex ops,
            which TF's pip interpreter cannot run, so a SavedModel export
            is compared instead).
        slow: Marked `slow` (the four large networks: `make test-quick`
            skips them; `make test` and CI run them).
    """

    build: Callable[[], keras.Model]
    inputs: Callable[[], Any]
    targets: Callable[[keras.Model, Any], Any]
    loss: Any
    schedule: Callable[[], Any]
    optimizer: Callable[[], Any]
    hub: bool
    tflite: str
    slow: bool = False


def _adam():
    return keras.optimizers.Adam(1e-3)


def _sgd():
    return keras.optimizers.SGD(1e-3)


_LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
_SOFTMAX_LOSS = keras.losses.SparseCategoricalCrossentropy()

CASES = {
    # A bare backbone with a dict of outputs, each fitted to an MSE target.
    "bert_backbone": Case(
        build=_bert_backbone,
        inputs=lambda: _tokens(with_segments=True),
        targets=_regression_targets,
        loss="mse",
        schedule=_polynomial,
        optimizer=_adam,
        hub=True,
        tflite="signature",
    ),
    "gpt2_backbone_in_functional": Case(
        build=_gpt2_with_head,
        inputs=_tokens,
        targets=_class_targets,
        loss=_LOGITS_LOSS,
        schedule=_constant,
        optimizer=_adam,
        hub=True,
        tflite="signature",
    ),
    "gemma_backbone": Case(
        build=_gemma_backbone,
        inputs=_tokens,
        targets=_regression_targets,
        loss="mse",
        schedule=_polynomial,
        optimizer=_sgd,
        hub=True,
        tflite="needs_select_ops",
    ),
    "llama_backbone_in_functional": Case(
        build=_llama_with_head,
        inputs=_tokens,
        targets=_class_targets,
        loss=_LOGITS_LOSS,
        schedule=_constant,
        optimizer=_sgd,
        hub=True,
        tflite="needs_select_ops",
    ),
    "vit_backbone": Case(
        build=_vit_backbone,
        inputs=_images,
        targets=_regression_targets,
        loss="mse",
        schedule=_polynomial,
        optimizer=_sgd,
        hub=True,
        tflite="run",
    ),
    "bert_text_classifier": Case(
        build=_bert_classifier,
        inputs=lambda: _tokens(with_segments=True),
        targets=_class_targets,
        loss=_LOGITS_LOSS,
        schedule=_constant,
        optimizer=_sgd,
        hub=True,
        tflite="signature",
    ),
    "mobilenet_v2": Case(
        build=_application("MobileNetV2"),
        inputs=_images,
        targets=_class_targets,
        loss=_SOFTMAX_LOSS,
        schedule=_polynomial,
        optimizer=_sgd,
        hub=False,
        tflite="run",
    ),
    "efficientnet_b0": Case(
        build=_application("EfficientNetB0"),
        inputs=_images,
        targets=_class_targets,
        loss=_SOFTMAX_LOSS,
        schedule=_constant,
        optimizer=_sgd,
        hub=False,
        tflite="run",
        slow=True,
    ),
    "resnet50": Case(
        build=_application("ResNet50"),
        inputs=_images,
        targets=_class_targets,
        loss=_SOFTMAX_LOSS,
        schedule=_polynomial,
        optimizer=_sgd,
        hub=False,
        tflite="run",
        slow=True,
    ),
    "convnext_tiny": Case(
        build=_application("ConvNeXtTiny"),
        inputs=_images,
        targets=_class_targets,
        loss=_SOFTMAX_LOSS,
        schedule=_constant,
        optimizer=_sgd,
        hub=False,
        tflite="run",
        slow=True,
    ),
    "densenet121": Case(
        build=_application("DenseNet121"),
        inputs=_images,
        targets=_class_targets,
        loss=_SOFTMAX_LOSS,
        schedule=_polynomial,
        optimizer=_sgd,
        hub=False,
        tflite="run",
        slow=True,
    ),
}

SLOW = {name for name, case in CASES.items() if case.slow}


# --- Checks -----------------------------------------------------------------


class _Stages:
    """Wall and CPU seconds per stage of one test (`pytest -s` shows them).

    CPU seconds are this process's; the fresh-process child's (which runs
    while the test strips and exports) are printed apart.
    """

    def __init__(self, case):
        self.case = case
        self.times = {}
        self.start = self.last = (time.monotonic(), time.process_time())
        self.children = _children_cpu()

    def done(self, stage):
        now = (time.monotonic(), time.process_time())
        self.times[stage] = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now

    def print(self):
        stages = ", ".join(
            f"{k} {wall:.1f}/{cpu:.1f}" for k, (wall, cpu) in self.times.items()
        )
        wall = time.monotonic() - self.start[0]
        cpu = time.process_time() - self.start[1]
        child = _children_cpu() - self.children
        print(
            f"\n{self.case}: wall/cpu s {wall:.1f}/{cpu:.1f} ({stages}); "
            f"fresh process cpu {child:.1f}"
        )


def _children_cpu():
    times = os.times()
    return times.children_user + times.children_system


def _assert_outputs_equal(actual, expected, what):
    keras.tree.assert_same_structure(actual, expected)
    for a, e in zip(
        keras.tree.flatten(actual), keras.tree.flatten(expected), strict=True
    ):
        np.testing.assert_array_equal(a, e, err_msg=what)


def _weight_sums(model):
    return [
        float(np.abs(as_numpy(w).astype(np.float64)).sum())
        for w in model.weights
    ]


def _is_bias(weight):
    return "bias" in weight.name


def _kernel_weights(model):
    """The model's kernel parameters, each variable once.

    Trainable weights of rank >= 2 that are not biases (EinsumDense biases
    have rank 2): dense, einsum and convolution kernels (depthwise ones
    too), attention projections, and embedding tables (token, position and
    segment embeddings, untied reverse embeddings, ViT's class token).
    Normalization scales, biases and layer scales (rank 1) are not.
    """
    found = {}
    for weight in model.trainable_weights:
        if len(weight.shape) >= 2 and not _is_bias(weight):
            found.setdefault(id(weight), weight)
    return list(found.values())


def _size(weight):
    return int(np.prod(weight.shape))


def _check_coverage(pruned):
    entries = mp.pruned_weights(pruned)
    kernels = _kernel_weights(pruned)
    kernel_ids = {id(w) for w in kernels}
    not_kernels = [e.name for e in entries if id(e.weight) not in kernel_ids]
    assert not not_kernels, (
        f"pruned weights that are not kernels: {not_kernels}"
    )
    pruned_ids = {id(e.weight) for e in entries}
    assert len(pruned_ids) == len(entries), "a weight is pruned twice"
    covered = sum(_size(w) for w in kernels if id(w) in pruned_ids)
    total = sum(_size(w) for w in kernels)
    left = sorted(w.path for w in kernels if id(w) not in pruned_ids)
    assert covered >= MIN_COVERAGE * total, (
        f"pruned {covered} of {total} kernel parameters; not pruned: {left}"
    )
    trainable = {id(w): w for w in pruned.trainable_weights}.values()
    all_pruned = sum(_size(w) for w in trainable if id(w) in pruned_ids)
    all_size = sum(_size(w) for w in trainable)
    # The README's table (`pytest -s tests/test_real_models.py`).
    print(
        f"{len(entries)} pruned weights; kernel parameters pruned "
        f"{covered:,} / {total:,} ({covered / total:.1%}); all trainable "
        f"parameters pruned {all_pruned / all_size:.1%}; kernels left: "
        f"{left}"
    )


def _expected_kept(entry):
    return expected_kept(_size(entry.mask), TARGET * entry.sparsity_scale)


def _check_masks(pruned):
    """Masks at TARGET exactly, masked weights zero (after the last update).

    The last mask update ran at the last step, so the weights are those it
    ranked: it keeps every magnitude at or above the k-th largest, which is
    the threshold, and more than k entries only when they tie with it.
    """
    entries = mp.pruned_weights(pruned)
    sparsities = mp.get_weight_sparsity(pruned)
    assert len(sparsities) == len(entries)
    for entry, sparsity in zip(entries, sparsities, strict=True):
        mask = as_numpy(entry.mask)
        weight = as_numpy(entry.weight)
        assert mask.shape == weight.shape, entry.name
        assert np.isin(mask, (0, 1)).all(), entry.name
        assert not np.any(weight[mask == 0]), f"{entry.name}: masked not zero"
        kept = _expected_kept(entry)
        nnz = np.count_nonzero(mask)
        assert sparsity == pytest.approx(1.0 - nnz / mask.size), entry.name
        assert nnz >= kept > 0, f"{entry.name}: kept {nnz}, expected {kept}"
        magnitudes = np.sort(np.abs(weight[mask != 0]))[::-1]
        kth = magnitudes[kept - 1]
        assert np.all(magnitudes[kept - 1 :] == kth), (
            f"{entry.name}: kept {nnz} entries, expected {kept} (no tie)"
        )
        assert as_numpy(entry.threshold) == kth, entry.name


def _check_stripped(stripped, pruned):
    assert isinstance(stripped, keras.Model) and stripped is not pruned
    assert mp.pruned_layers(stripped) == []
    paths = [w.path for w in stripped.weights]
    leftovers = [
        p
        for p in paths
        if any(v in p.rsplit("/", 1)[-1] for v in _PRUNING_VARIABLES)
    ]
    assert not leftovers, leftovers
    kept = sum(np.count_nonzero(as_numpy(m)) for m in mp.get_masks(pruned))
    sizes = sum(_size(m) for m in mp.get_masks(pruned))
    assert sum(_size(w) for w in stripped.weights) >= sizes
    zeros = sum(
        w.size - np.count_nonzero(w) for w in map(as_numpy, stripped.weights)
    )
    assert zeros >= sizes - kept


def _tflite_outputs(path, inputs, expected):
    """Runs the TFLite file on `inputs`, shaped like `expected`."""
    if isinstance(inputs, np.ndarray) and not isinstance(expected, dict):
        return mp.run_tflite(path, inputs)
    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    got = runner(**inputs)
    if isinstance(expected, dict):
        return {key: got[key] for key in expected}
    (only,) = got.values()
    return only


def _assert_close(actual, expected, what):
    for a, e in zip(
        keras.tree.flatten(actual), keras.tree.flatten(expected), strict=True
    ):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(
            a, e, rtol=0, atol=TFLITE_ATOL * scale, err_msg=what
        )


def _check_tflite(case, stripped, inputs, expected, tmp_path):
    path = tmp_path / "stripped.tflite"
    if case.tflite == "needs_select_ops":
        with pytest.raises(ValueError, match="select_tf_ops=True"):
            mp.export_tflite(stripped, path)
        assert not path.exists()
        size = mp.export_tflite(stripped, path, select_tf_ops=True)
        assert size == os.path.getsize(path) > 0
        assert b"FlexStridedSlice" in path.read_bytes()
        # Served instead as a SavedModel, with the same outputs.
        saved = tmp_path / "saved_model"
        assert mp.export_saved_model(stripped, saved) > 0
        served = tf.saved_model.load(str(saved))  # Keep it alive to serve.
        got = keras.tree.map_structure(np.asarray, served.serve(inputs))
        _assert_close(got, expected, "SavedModel outputs")
        return
    size = mp.export_tflite(stripped, path)
    assert size > 0 and size == os.path.getsize(path)
    got = _tflite_outputs(path, inputs, expected)
    _assert_close(got, expected, "TFLite outputs")


def _check_report(pruned):
    report = mp.sparsity_report(pruned)
    assert isinstance(report, mp.report.SparsityReport)
    masks = [as_numpy(m) for m in mp.get_masks(pruned)]
    reported = [w for w in report.weights if w.pruned]
    # Each pruned weight is reported with its mask's zeros (weight * mask).
    assert sorted((w.size, w.nnz) for w in reported) == sorted(
        (m.size, np.count_nonzero(m)) for m in masks
    )
    pruned_size = sum(w.size for w in reported)
    pruned_nnz = sum(w.nnz for w in reported)
    assert 1 - pruned_nnz / pruned_size == pytest.approx(TARGET, abs=0.01)
    total = report.total
    assert total.size == sum(w.size for w in report.weights)
    assert total.nnz == sum(w.nnz for w in report.weights)
    assert total.sparsity >= TARGET * pruned_size / total.size - 0.01
    assert total.compact_bytes < 0.5 * total.dense_bytes


def _check_fresh_process(result, pruned, expected, saved_state):
    """What the child saw on load and after resuming."""
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert str(result["classes"]) == type(pruned).__name__
    assert list(result["names"]) == names
    _assert_outputs_equal(
        rmw.unpack(result, "outputs"), expected, "reloaded outputs"
    )
    assert int(result["iterations_loaded"]) == FIT_STEPS
    np.testing.assert_array_equal(result["optimizer_sums"], saved_state)
    np.testing.assert_array_equal(result["kept_loaded"], _mask_counts(pruned))
    assert not result["masked_nonzero_loaded"].any()
    assert int(result["iterations_resumed"]) == FIT_STEPS + rmw.RESUME_STEPS
    assert np.isfinite(result["losses"]).all()
    for name, regrown, nonzero in zip(
        names, result["regrown"], result["masked_nonzero"], strict=True
    ):
        assert regrown == 0, f"{name}: {regrown} mask entries regrew"
        assert nonzero == 0, f"{name}: {nonzero} masked entries not zero"
    # Past the end step (or at constant sparsity) the counts stay at TARGET.
    np.testing.assert_array_equal(result["kept_resumed"], result["kept_loaded"])


def _mask_counts(pruned):
    return np.array(
        [np.count_nonzero(as_numpy(m)) for m in mp.get_masks(pruned)]
    )


# --- The test ---------------------------------------------------------------


def _params():
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in CASES
    ]


@pytest.mark.parametrize("name", _params())
def test_prune_train_reload_strip_export(name, tmp_path):
    case = CASES[name]
    if case.hub:
        _hub()
    stages = _Stages(name)
    model_path = tmp_path / "pruned.keras"
    data_path = tmp_path / "data.npz"
    result_path = tmp_path / "fresh.npz"
    # Started first: its imports overlap building and fitting here.
    worker = rmw.Worker(
        [str(model_path), str(data_path), str(result_path)]
        + (["--hub"] if case.hub else [])
        + ["--resume_steps", str(rmw.RESUME_STEPS)],
        log=str(tmp_path / "worker.log"),
    )
    try:
        model = case.build()
        inputs = case.inputs()
        targets = case.targets(model, inputs)
        source_sums = _weight_sums(model)
        stages.done("build")

        pruned = mp.prune_low_magnitude(model, pruning_schedule=case.schedule())
        assert isinstance(pruned, keras.Model) and pruned is not model
        assert mp.pruned_layers(model) == []
        _check_coverage(pruned)
        stages.done("prune")

        pruned.compile(optimizer=case.optimizer(), loss=case.loss)
        history = pruned.fit(
            inputs,
            targets,
            batch_size=SAMPLES // FIT_STEPS,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[mp.UpdatePruningStep()],
        )
        assert np.isfinite(history.history["loss"]).all()
        assert int(as_numpy(pruned.optimizer.iterations)) == FIT_STEPS
        _check_masks(pruned)
        assert _weight_sums(model) == source_sums, "the source model changed"
        assert mp.pruned_layers(model) == []
        stages.done("fit")

        expected = rmw.outputs(pruned, inputs)
        saved_state = rmw.optimizer_sums(pruned)
        pruned.save(model_path)
        # Written whole, then renamed: the child starts on the rename.
        part = tmp_path / "data.part.npz"
        np.savez(part, **rmw.pack("x", inputs), **rmw.pack("y", targets))
        os.replace(part, data_path)
        stages.done("save")

        stripped = mp.strip_pruning(pruned)
        _check_stripped(stripped, pruned)
        _assert_outputs_equal(
            rmw.outputs(stripped, inputs), expected, "stripped outputs"
        )
        stripped_path = tmp_path / "stripped.keras"
        stripped.save(stripped_path)
        reloaded = keras.models.load_model(stripped_path)
        assert type(reloaded) is type(stripped)
        assert mp.pruned_layers(reloaded) == []
        _assert_outputs_equal(
            rmw.outputs(reloaded, inputs), expected, "reloaded stripped"
        )
        stages.done("strip")

        _check_tflite(case, stripped, inputs, expected, tmp_path)
        stages.done("tflite")
        _check_report(pruned)
        stages.done("report")

        worker.finish()
        stages.done("wait_fresh")
    finally:
        worker.stop()
    _check_fresh_process(
        dict(np.load(result_path)), pruned, expected, saved_state
    )
    stages.print()
