"""Every read of Keras internals this library needs, in one place.

Each function names the private attribute it reads and the Keras version it
was written against (3.15); `tests/test_compat.py` fails loudly, naming the
installed Keras, when a release changes one of them.
"""

from typing import Any


def node_making(tensor: Any) -> tuple[Any, Any]:
    """Returns the operation and node (call) that made a symbolic tensor.

    Keras keeps this only in private attributes: the tensor's
    `_keras_history` and the operation's `_inbound_nodes` (Keras 3.15).
    """
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]
