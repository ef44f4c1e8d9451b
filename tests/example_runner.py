"""Runs an example script in tiny mode, in a subprocess, for the tests."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str, output_dir: pathlib.Path, *flags: str) -> str:
    """Runs `examples/<script> --mode=tiny` and returns its output.

    Fails the test with the end of the script's output when it exits with
    a non-zero status.
    """
    command = [
        sys.executable,
        str(EXAMPLES / script),
        "--mode=tiny",
        f"--output_dir={output_dir}",
        "--noverbose",
        *flags,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(command)} exited with {done.returncode}:\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout
