"""contrib's `strip_pruning_vars` command, for TF1-style checkpoints.

```shell
python -m model_pruning.contrib.python.strip_pruning_vars \\
    --checkpoint_dir=/tmp/cifar10_train \\
    --output_node_names=softmax_linear/softmax_linear \\
    --output_dir=/tmp --filename=pruning_stripped.pb
```

Freezes the newest checkpoint in `--checkpoint_dir`, folds every mask into
its weight and writes the binary GraphDef. For `.keras` models use
`python -m model_pruning.strip_pruning_vars` instead.
"""

import sys

from absl import app
from absl import flags

from model_pruning.contrib.python import strip_pruning_vars_lib


def parse_output_node_names(text: str) -> list[str]:
    """Splits `--output_node_names` on commas, dropping spaces.

    Raises:
        ValueError: If no node name is given.
    """
    names = [n.strip() for n in str(text).split(",")]
    names = [n for n in names if n]
    if not names:
        raise ValueError(
            "Need to specify atleast 1 output node through "
            f"--output_node_names. Received: output_node_names={text!r}"
        )
    return names


def main(argv: list[str]) -> int:
    """Runs `strip_pruning_vars_lib.strip_pruning_vars` with the flags.

    Args:
        argv: The arguments left after flag parsing; only the program name.

    Returns:
        The exit status: 0 on success, 1 on a `ValueError` (printed as
        `Error: ...` on stderr).

    Raises:
        app.UsageError: If positional arguments are given.
    """
    if len(argv) > 1:
        raise app.UsageError(
            f"Unexpected positional arguments. Received: {argv[1:]}"
        )
    values = flags.FLAGS
    try:
        names = parse_output_node_names(values.output_node_names)
        path = strip_pruning_vars_lib.strip_pruning_vars(
            values.checkpoint_dir, names, values.output_dir, values.filename
        )
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run() -> None:
    """Entry point: defines the flags (not at import) and runs `main`."""
    _define_flags(flags.FLAGS)
    app.run(main)


def _define_flags(flag_values: flags.FlagValues) -> None:
    definitions = {
        "checkpoint_dir": ("", "Path to the checkpoints."),
        "output_node_names": (
            "",
            "Comma separated names of the output nodes of the graph.",
        ),
        "output_dir": ("/tmp", "Directory to write the stripped GraphDef."),
        "filename": ("pruning_stripped.pb", "Output GraphDef file name."),
    }
    for name, (default, help_text) in definitions.items():
        if name not in flag_values:
            flags.DEFINE_string(
                name, default, help_text, flag_values=flag_values
            )


if __name__ == "__main__":
    run()
