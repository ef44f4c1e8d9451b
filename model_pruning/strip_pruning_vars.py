"""Strips the pruning variables from a saved pruned model (contrib's tool).

Contrib's `strip_pruning_vars` froze a TF1 checkpoint into a GraphDef with
each `masked_weight` replaced by a constant. This is its Keras counterpart:
it loads a pruned `.keras` model (a file, or the newest `.keras` file in a
directory, such as `keras.callbacks.ModelCheckpoint` writes), folds the masks
into the weights with `strip_pruning`, and writes a plain model without mask,
threshold or step variables.

Command line:

```shell
python -m model_pruning.strip_pruning_vars --checkpoint_dir=/tmp/ckpt \\
    --output_dir=/tmp --filename=pruning_stripped.keras --output_format=keras
```

`--output_node_names` is gone: a Keras model knows its outputs.
"""

import os
import sys
from typing import Any

import keras
from absl import app
from absl import flags
from absl import logging

from model_pruning import accessors
from model_pruning.prune import strip_pruning

# Suffix each output format requires of `filename` (`None`: a directory).
_SUFFIXES = {
    "keras": ".keras",
    "saved_model": None,
    "weights_h5": ".weights.h5",
}
# `filename` when none is given.
_DEFAULT_FILENAMES = {
    "keras": "pruning_stripped.keras",
    "saved_model": "pruning_stripped",
    "weights_h5": "pruning_stripped.weights.h5",
}


def strip_pruning_vars(
    checkpoint_dir: str,
    output_dir: str,
    filename: str | None = None,
    output_format: str = "keras",
) -> str:
    """Loads a pruned `.keras` model, strips it, and writes the result.

    Every argument and the checkpoint are checked before anything is written.

    Args:
        checkpoint_dir: A `.keras` file, or a directory: then its newest
            `.keras` file (by modification time, ties broken by the later
            name) is used, which suits `keras.callbacks.ModelCheckpoint`.
        output_dir: Directory to write to; created if missing.
        filename: Name of the output inside `output_dir`. Defaults to
            `None`: `"pruning_stripped.keras"`, `"pruning_stripped"` or
            `"pruning_stripped.weights.h5"` by format. It must end in
            `.keras` for
            `"keras"` and in `.weights.h5` for `"weights_h5"`; for
            `"saved_model"` it names a directory and must not end in
            `.keras` or `.h5`.
        output_format: `"keras"` (`model.save`), `"saved_model"`
            (`model.export(..., format="tf_saved_model")`) or `"weights_h5"`
            (`model.save_weights`). Defaults to `"keras"`.

    Returns:
        The path written: `os.path.join(output_dir, filename)`.

    Raises:
        ValueError: If `output_format` is unknown, `filename` does not suit
            it, no checkpoint is found, the checkpoint is not a loadable
            `.keras` model, or the model has no pruned layers.

    Example:

    ```python
    path = strip_pruning_vars("/tmp/ckpt", "/tmp", "model.keras")
    model = keras.models.load_model(path)
    ```
    """
    if output_format in _DEFAULT_FILENAMES and not filename:
        filename = _DEFAULT_FILENAMES[output_format]
    _check_output(filename, output_format)
    checkpoint = _find_checkpoint(checkpoint_dir)
    model = _load_pruned(checkpoint)
    logging.info("Stripping pruning variables from %s", checkpoint)
    path = os.path.join(output_dir, filename)
    _write(strip_pruning(model), path, output_format)
    return path


def main(argv: list[str]) -> int:
    """Runs `strip_pruning_vars` with the command line flags.

    Args:
        argv: The arguments left after flag parsing; only the program name.

    Returns:
        The exit status: 0 on success, 1 on a `ValueError` (printed as
        `Error: ...` on stderr, without a traceback).

    Raises:
        app.UsageError: If positional arguments are given.
    """
    if len(argv) > 1:
        raise app.UsageError(
            f"Unexpected positional arguments. Received: {argv[1:]}"
        )
    values = flags.FLAGS
    try:
        path = strip_pruning_vars(
            checkpoint_dir=values.checkpoint_dir,
            output_dir=values.output_dir,
            filename=values.filename,
            output_format=values.output_format,
        )
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run() -> None:
    """Console-script entry point: defines the flags and runs `main`.

    The flags are defined here, not at import, so importing this module
    (from another absl program or a test) defines no global flags.
    """
    _define_flags(flags.FLAGS)
    app.run(main)


def _define_flags(flag_values: flags.FlagValues) -> None:
    """Defines the flags on `flag_values`, skipping any already there."""
    definitions = {
        "checkpoint_dir": (
            None,
            "A pruned .keras file, or a directory whose newest .keras file "
            "is used (e.g. keras.callbacks.ModelCheckpoint output).",
        ),
        "output_dir": ("/tmp", "Output directory; created if missing."),
        "filename": (
            "",
            "Output name inside --output_dir: *.keras for keras, "
            "*.weights.h5 for weights_h5, a directory name for saved_model. "
            "Default: pruning_stripped(.keras|.weights.h5) by format.",
        ),
        "output_format": ("keras", f"One of {', '.join(_SUFFIXES)}."),
    }
    for name, (default, help_text) in definitions.items():
        if name in flag_values:
            continue
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
        if name == "checkpoint_dir":
            flags.mark_flag_as_required(name, flag_values=flag_values)


def _check_output(filename: Any, output_format: Any) -> None:
    if output_format not in _SUFFIXES:
        raise ValueError(
            f"`output_format` must be one of {list(_SUFFIXES)}. "
            f"Received: output_format={output_format!r}"
        )
    if not isinstance(filename, str) or not filename:
        raise ValueError(
            f"`filename` must be a non-empty string. Received: "
            f"filename={filename!r}"
        )
    suffix = _SUFFIXES[output_format]
    if suffix is not None and not filename.endswith(suffix):
        raise ValueError(
            f"With output_format={output_format!r}, `filename` must end in "
            f"{suffix!r}. Received: filename={filename!r}"
        )
    if suffix is None and filename.endswith((".keras", ".h5")):
        raise ValueError(
            f"With output_format={output_format!r}, `filename` names a "
            "directory and must not end in '.keras' or '.h5'. "
            f"Received: filename={filename!r}"
        )


def _find_checkpoint(checkpoint_dir: Any) -> str:
    """Returns the `.keras` file to load for `checkpoint_dir`."""
    path = os.fspath(checkpoint_dir) if checkpoint_dir is not None else ""
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise ValueError(
                f"The checkpoint {path!r} is not a .keras file. "
                f"Received: checkpoint_dir={checkpoint_dir!r}"
            )
        return path
    candidates = []
    if os.path.isdir(path):
        candidates = [
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.endswith(".keras")
            and os.path.isfile(os.path.join(path, name))
        ]
    if not candidates:
        raise ValueError(
            f"Could not find a checkpoint at: {path} (expected a .keras "
            "file, or a directory holding one). "
            f"Received: checkpoint_dir={checkpoint_dir!r}"
        )
    return max(candidates, key=lambda p: (os.path.getmtime(p), p))


def _load_pruned(path: str) -> keras.Model:
    """Loads the pruned model at `path`, or raises a ValueError."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file.
        raise ValueError(
            f"The checkpoint {path!r} is not a loadable .keras model: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not accessors.pruned_layers(model):
        raise ValueError(
            f"The model at {path!r} has no pruning variables (no "
            "PruneLowMagnitude layers): there is nothing to strip."
        )
    return model


def _write(model: keras.Model, path: str, output_format: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if output_format == "keras":
        model.save(path)
    elif output_format == "saved_model":
        model.export(path, format="tf_saved_model", verbose=False)
    else:
        model.save_weights(path)


if __name__ == "__main__":
    run()
