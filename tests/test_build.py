"""The Bazel BUILD file names every library module and test file."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _build_text():
    return (ROOT / "BUILD").read_text(encoding="utf-8")


def test_build_has_a_library_target_for_every_module():
    listed = set(re.findall(r'"(model_pruning/[\w/]+\.py)"', _build_text()))
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "model_pruning").rglob("*.py")
    }
    assert modules - listed == set()


def test_build_has_a_test_target_for_every_test_file():
    lists = re.findall(r"for test in \[(.*?)\]", _build_text(), re.S)
    listed = {
        name for text in lists for name in re.findall(r'"(test_\w+)"', text)
    }
    test_files = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
    assert test_files - listed == set()


def test_public_names_resolve():
    import model_pruning as mp

    assert len(set(mp.__all__)) == len(mp.__all__)
    for name in mp.__all__:
        assert getattr(mp, name) is not None, name
