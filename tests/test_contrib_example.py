"""End-to-end test of `examples/cifar10_pruning.py` in `--synthetic` mode.

Runs the example as a subprocess (its absl flags stay out of this process):
generated data, 20 graph-mode training steps with contrib's
`sess.run(train_op)` / `sess.run(mask_update_op)` loop, then the
checkpoint is stripped. No data set is needed.
"""

import os
import re
import subprocess
import sys

import pytest

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXAMPLE = os.path.join(_REPO, "examples", "cifar10_pruning.py")


def _run(*flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(
        [_REPO, env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, _EXAMPLE, "--synthetic", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_synthetic_run_prunes_trains_and_strips(tmp_path):
    hparams = (
        "name=cifar10_pruning,pruning_frequency=2,begin_pruning_step=2,"
        "end_pruning_step=8,target_sparsity=0.75,"
        "sparsity_function_begin_step=2,sparsity_function_end_step=8"
    )
    result = _run(
        f"--train_dir={tmp_path}",
        "--max_steps=10",
        f"--pruning_hparams={hparams}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    per_weight = re.findall(r"^\s+(\S+/mask)\s+sparsity ([0-9.]+)$", out, re.M)
    assert [name for name, _ in per_weight] == [
        "conv1/mask",
        "conv2/mask",
        "local3/mask",
        "local4/mask",
        "softmax_linear/mask",
    ]
    # The schedule reached target_sparsity=0.75 at step 8, on every weight.
    for _, value in per_weight:
        assert abs(float(value) - 0.75) < 1e-3
    final = float(re.search(r"final sparsity: ([0-9.]+)", out).group(1))
    assert abs(final - 0.75) < 1e-3
    accuracy = float(re.search(r"final accuracy: ([0-9.]+)", out).group(1))
    assert 0.0 <= accuracy <= 1.0
    assert re.search(r"step 10, loss = [0-9.]+", out)
    assert "(5 mask nodes -> 0), outputs identical: True" in out
    assert (tmp_path / "pruning_stripped.pb").is_file()
    assert any(p.name.startswith("events.out") for p in tmp_path.iterdir())
