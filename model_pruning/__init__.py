"""Gradual magnitude pruning (Zhu & Gupta 2017) for Keras 3 on TensorFlow."""

from model_pruning.accessors import get_masked_weights
from model_pruning.accessors import get_masks
from model_pruning.accessors import get_thresholds
from model_pruning.accessors import get_weight_sparsity
from model_pruning.accessors import get_weights
from model_pruning.accessors import pruned_layers
from model_pruning.accessors import pruned_weights
from model_pruning.callbacks import PruningSummaries
from model_pruning.callbacks import UpdatePruningStep
from model_pruning.hparams import NO_END_STEP
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import get_pruning_hparams
from model_pruning.prune import prune_low_magnitude
from model_pruning.prune import strip_pruning
from model_pruning.pruning import Pruning
from model_pruning.registry import PrunableLayer
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PolynomialDecay
from model_pruning.schedule import PruningSchedule
from model_pruning.schedule import should_update_masks
from model_pruning.schedule import target_sparsity
from model_pruning.wrapper import PrunedWeight
from model_pruning.wrapper import PruneLowMagnitude

__version__ = "0.1.0"

__all__ = [
    "NO_END_STEP",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PrunedWeight",
    "Pruning",
    "PruningHParams",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "get_masked_weights",
    "get_masks",
    "get_pruning_hparams",
    "get_thresholds",
    "get_weight_sparsity",
    "get_weights",
    "prune_low_magnitude",
    "pruned_layers",
    "pruned_weights",
    "should_update_masks",
    "strip_pruning",
    "target_sparsity",
]
