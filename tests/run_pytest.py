"""Runs pytest on the files given as arguments (the Bazel py_test entry).

Bazel is the second pass over the same files in CI, after `make test` has
run all of them: it skips the cases marked `slow` (whole examples and real
models, minutes on 2 cores), which `make test` covers.
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(
        pytest.main(
            ["-q", "-p", "no:cacheprovider", "-m", "not slow", *sys.argv[1:]]
        )
    )
