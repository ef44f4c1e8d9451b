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
from model_pruning.checkpoint import AtomicModelCheckpoint
from model_pruning.export import export_saved_model
from model_pruning.export import export_tflite
from model_pruning.export import run_tflite
from model_pruning.hparams import NO_END_STEP
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import get_pruning_hparams
from model_pruning.litert import DensifiedWeightWarning
from model_pruning.litert import LiteRTReport
from model_pruning.litert import LiteRTWeight
from model_pruning.litert import inspect_tflite
from model_pruning.paper_sizes import overhead_mb
from model_pruning.paper_sizes import sparse_model_mb
from model_pruning.policies import PruneForLatencyOnLiteRT
from model_pruning.policies import PruneForLatencyOnXNNPack
from model_pruning.policies import PruningPolicy
from model_pruning.prunable import PrunableLayer
from model_pruning.prune import prune_low_magnitude
from model_pruning.prune import prune_scope
from model_pruning.prune import strip_pruning
from model_pruning.pruned_model import PrunedModel
from model_pruning.pruning import Pruning
from model_pruning.report import SizeCounts
from model_pruning.report import SparsityReport
from model_pruning.report import WeightReport
from model_pruning.report import print_sparsity_report
from model_pruning.report import sparsity_report
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PolynomialDecay
from model_pruning.schedule import PruningSchedule
from model_pruning.schedule import should_update_masks
from model_pruning.schedule import target_sparsity
from model_pruning.sparse_formats import BitMaskEncoding
from model_pruning.sparse_formats import CsrcEncoding
from model_pruning.sparse_formats import decode_bitmask
from model_pruning.sparse_formats import decode_csrc
from model_pruning.sparse_formats import encode_bitmask
from model_pruning.sparse_formats import encode_csrc
from model_pruning.sparse_formats import quantization_error
from model_pruning.sparse_io import load_sparse_weights
from model_pruning.sparse_io import save_sparse_weights
from model_pruning.wrapper import PrunedWeight
from model_pruning.wrapper import PruneLowMagnitude

__version__ = "0.1.0"

__all__ = [
    "AtomicModelCheckpoint",
    "BitMaskEncoding",
    "ConstantSparsity",
    "CsrcEncoding",
    "DensifiedWeightWarning",
    "LiteRTReport",
    "LiteRTWeight",
    "NO_END_STEP",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnLiteRT",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PrunedModel",
    "PrunedWeight",
    "Pruning",
    "PruningHParams",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "SizeCounts",
    "SparsityReport",
    "UpdatePruningStep",
    "WeightReport",
    "decode_bitmask",
    "decode_csrc",
    "encode_bitmask",
    "encode_csrc",
    "export_saved_model",
    "export_tflite",
    "get_masked_weights",
    "get_masks",
    "get_pruning_hparams",
    "get_thresholds",
    "get_weight_sparsity",
    "get_weights",
    "inspect_tflite",
    "load_sparse_weights",
    "overhead_mb",
    "print_sparsity_report",
    "prune_low_magnitude",
    "prune_scope",
    "pruned_layers",
    "pruned_weights",
    "quantization_error",
    "run_tflite",
    "save_sparse_weights",
    "should_update_masks",
    "sparse_model_mb",
    "sparsity_report",
    "strip_pruning",
    "target_sparsity",
]
