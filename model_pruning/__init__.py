"""Gradual magnitude pruning (Zhu & Gupta 2017) for Keras 3 on TensorFlow.

The top level holds tfmot's names (`prune_low_magnitude`, the schedules,
the wrapper, callbacks and policies), contrib's (`get_pruning_hparams`,
`Pruning`, the getters) and the main path from a pruned model to a file
(`sparsity_report`, `export_tflite`, `inspect_tflite`). The rest is in its
submodule: `sparse_formats` (encoders), `sparse_io` (compact weight files),
`report` and `paper_sizes` (sizes), `litert` (reading `.tflite` files),
`export`, `schedule`.
"""

from model_pruning import export
from model_pruning import litert
from model_pruning import paper_sizes
from model_pruning import report
from model_pruning import schedule
from model_pruning import sparse_formats
from model_pruning import sparse_io
from model_pruning.accessors import get_masked_weights
from model_pruning.accessors import get_masks
from model_pruning.accessors import get_thresholds
from model_pruning.accessors import get_weight_sparsity
from model_pruning.accessors import get_weights
from model_pruning.accessors import pruned_layers
from model_pruning.accessors import pruned_weights
from model_pruning.backends import UnsupportedBackendError
from model_pruning.callbacks import PruningSummaries
from model_pruning.callbacks import UpdatePruningStep
from model_pruning.checkpoint import AtomicModelCheckpoint
from model_pruning.export import export_saved_model
from model_pruning.export import export_tflite
from model_pruning.export import run_tflite
from model_pruning.hparams import NO_END_STEP
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import get_pruning_hparams
from model_pruning.litert import DensifiedWeightWarning
from model_pruning.litert import inspect_tflite
from model_pruning.policies import PruneForLatencyOnLiteRT
from model_pruning.policies import PruneForLatencyOnXNNPack
from model_pruning.policies import PruningPolicy
from model_pruning.prunable import PrunableLayer
from model_pruning.prune import prune_low_magnitude
from model_pruning.prune import prune_scope
from model_pruning.prune import strip_pruning
from model_pruning.pruned_model import PrunedModel
from model_pruning.pruning import Pruning
from model_pruning.report import print_sparsity_report
from model_pruning.report import sparsity_report
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PolynomialDecay
from model_pruning.schedule import PruningSchedule
from model_pruning.schedule import should_update_masks
from model_pruning.schedule import target_sparsity
from model_pruning.wrapper import PruneLowMagnitude

__version__ = "0.1.0"

__all__ = [
    # Submodules, for the names not at the top level.
    "export",
    "litert",
    "paper_sizes",
    "report",
    "schedule",
    "sparse_formats",
    "sparse_io",
    # tfmot's, contrib's and the main path's names.
    "AtomicModelCheckpoint",
    "ConstantSparsity",
    "DensifiedWeightWarning",
    "NO_END_STEP",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnLiteRT",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PrunedModel",
    "Pruning",
    "PruningHParams",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UnsupportedBackendError",
    "UpdatePruningStep",
    "export_saved_model",
    "export_tflite",
    "get_masked_weights",
    "get_masks",
    "get_pruning_hparams",
    "get_thresholds",
    "get_weight_sparsity",
    "get_weights",
    "inspect_tflite",
    "print_sparsity_report",
    "prune_low_magnitude",
    "prune_scope",
    "pruned_layers",
    "pruned_weights",
    "run_tflite",
    "should_update_masks",
    "sparsity_report",
    "strip_pruning",
    "target_sparsity",
]
