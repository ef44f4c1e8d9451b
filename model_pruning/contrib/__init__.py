"""A mirror of `tf.contrib.model_pruning` (TF 1.x) on Keras 3 / TF 2.

Code written for contrib runs with its imports changed:

```python
from model_pruning import contrib as model_pruning
# was: from tensorflow.contrib import model_pruning
from model_pruning.contrib.python import pruning
# was: from tensorflow.contrib.model_pruning.python import pruning
```

Contrib's public names are here: `apply_mask`, the getters
(`get_masks`, `get_thresholds`, `get_weights`, `get_masked_weights`,
`get_weight_sparsity`), `get_pruning_hparams`, `Pruning`, the masked layers
(`masked_conv2d` / `masked_convolution`, `masked_fully_connected`,
`MaskedBasicLSTMCell`, `MaskedLSTMCell`) and the strip functions
(`strip_pruning_vars_fn`, `graph_def_from_checkpoint`). Also exported: the
Keras layers `MaskedConv2D` and `MaskedFullyConnected` (contrib kept them in
`core_layers`), and `PruningRegistry`, the TF2 stand-in for the graph
collections (see `model_pruning.contrib.python.registry`).

Unlike `model_pruning.get_masks(model)`, the getters here take no model:
they read what `apply_mask` and the masked layers registered.
"""

from model_pruning.contrib.python.layers.core_layers import MaskedConv2D
from model_pruning.contrib.python.layers.core_layers import MaskedFullyConnected
from model_pruning.contrib.python.layers.layers import masked_conv2d
from model_pruning.contrib.python.layers.layers import masked_convolution
from model_pruning.contrib.python.layers.layers import masked_fully_connected
from model_pruning.contrib.python.layers.rnn_cells import MaskedBasicLSTMCell
from model_pruning.contrib.python.layers.rnn_cells import MaskedLSTMCell
from model_pruning.contrib.python.pruning import HParams
from model_pruning.contrib.python.pruning import Pruning
from model_pruning.contrib.python.pruning import apply_mask
from model_pruning.contrib.python.pruning import get_masked_weights
from model_pruning.contrib.python.pruning import get_masks
from model_pruning.contrib.python.pruning import get_pruning_hparams
from model_pruning.contrib.python.pruning import get_thresholds
from model_pruning.contrib.python.pruning import get_weight_sparsity
from model_pruning.contrib.python.pruning import get_weights
from model_pruning.contrib.python.registry import PruningRegistry
from model_pruning.contrib.python.registry import clear_registry
from model_pruning.contrib.python.registry import get_default_registry
from model_pruning.contrib.python.strip_pruning_vars_lib import (
    graph_def_from_checkpoint,
)
from model_pruning.contrib.python.strip_pruning_vars_lib import (
    strip_pruning_vars_fn,
)

__all__ = [
    "HParams",
    "MaskedBasicLSTMCell",
    "MaskedConv2D",
    "MaskedFullyConnected",
    "MaskedLSTMCell",
    "Pruning",
    "PruningRegistry",
    "apply_mask",
    "clear_registry",
    "get_default_registry",
    "get_masked_weights",
    "get_masks",
    "get_pruning_hparams",
    "get_thresholds",
    "get_weight_sparsity",
    "get_weights",
    "graph_def_from_checkpoint",
    "masked_conv2d",
    "masked_convolution",
    "masked_fully_connected",
    "strip_pruning_vars_fn",
]
