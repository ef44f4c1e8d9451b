"""contrib's `strip_pruning_vars_lib.py`: fold masks into a frozen GraphDef.

For TF1-style (graph mode) models. Freeze the newest checkpoint, replace
every masked-weight node (`.../weights/masked_weight`, made by `apply_mask`
and the masked layers in graph mode) by a constant holding `mask * weight`,
and keep only the nodes the outputs need: the mask, threshold and raw
weight constants drop out. The result computes exactly what the pruned
graph computed.

Keras models (`.keras` files) are stripped by `model_pruning.strip_pruning`
and the `model_pruning.strip_pruning_vars` command instead.
"""

import logging
from typing import Any

import numpy as np
import tensorflow as tf

_MASKED_WEIGHT_SUBSTRING = "masked_weight"


def _node_name(tensor_name: str) -> str:
    """Returns `"x"` for the tensor name `"x:0"` (a node name unchanged)."""
    if ":" not in tensor_name:
        return tensor_name
    return tensor_name.split(":")[0]


def _tensor_name(node_name: str) -> str:
    """Returns `"x:0"` for the node name `"x"` (a tensor name unchanged)."""
    if ":" in node_name:
        return node_name
    return node_name + ":0"


def _check_output_node_names(output_node_names: Any) -> list[str]:
    if isinstance(output_node_names, str) or not isinstance(
        output_node_names, (list, tuple)
    ):
        raise TypeError(
            "`output_node_names` must be a list of node names. "
            f"Received: output_node_names={output_node_names!r}"
        )
    names = list(output_node_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            "Need to specify at least 1 output node, each a non-empty "
            f"string. Received: output_node_names={output_node_names!r}"
        )
    return [_node_name(n) for n in names]


def _is_masked_weight(node: Any) -> bool:
    return _MASKED_WEIGHT_SUBSTRING in node.name and node.op != "Const"


def _get_masked_weights(input_graph_def: Any) -> dict[str, np.ndarray]:
    """Returns `{node name: value}` of every masked-weight node."""
    names = [n.name for n in input_graph_def.node if _is_masked_weight(n)]
    if not names:
        return {}
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(input_graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            values = sess.run(
                [graph.get_tensor_by_name(_tensor_name(n)) for n in names]
            )
    for name, value in zip(names, values, strict=True):
        zeros = 100.0 - 100.0 * np.count_nonzero(value) / max(value.size, 1)
        logging.info("%s has %d values, %1.2f%% zeros", name, value.size, zeros)
    return dict(zip(names, values, strict=True))


def strip_pruning_vars_fn(
    input_graph_def: Any, output_node_names: list[str]
) -> Any:
    """Replaces each masked weight by a constant and drops the pruning nodes.

    ```
    masked_weight node  ->  Const(mask * weight), same name and dtype
    result               =  the sub-graph the output nodes need
    ```

    Args:
        input_graph_def: A frozen `tf.compat.v1.GraphDef` (variables already
            constants), e.g. from `graph_def_from_checkpoint` or
            `tf.compat.v1.graph_util.convert_variables_to_constants`.
        output_node_names: The output node names (`"x"`; `"x:0"` is
            accepted).

    Returns:
        A new `GraphDef` with no mask or threshold nodes.

    Raises:
        TypeError: If `input_graph_def` is not a `GraphDef` or
            `output_node_names` not a list.
        ValueError: If `output_node_names` is empty or names a node that is
            not in the graph.

    Example:

    ```python
    frozen = graph_def_from_checkpoint("/tmp/train", ["softmax_linear/add"])
    stripped = strip_pruning_vars_fn(frozen, ["softmax_linear/add"])
    ```
    """
    if not isinstance(input_graph_def, tf.compat.v1.GraphDef):
        raise TypeError(
            "`input_graph_def` must be a tf.compat.v1.GraphDef. "
            f"Received: input_graph_def={type(input_graph_def).__name__}"
        )
    names = _check_output_node_names(output_node_names)
    present = {node.name for node in input_graph_def.node}
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(
            f"Output nodes {missing} are not in the graph. "
            f"Received: output_node_names={output_node_names!r}"
        )
    masked_weights = _get_masked_weights(input_graph_def)
    pruned = tf.compat.v1.GraphDef()
    pruned.versions.CopyFrom(input_graph_def.versions)
    pruned.library.CopyFrom(input_graph_def.library)
    for node in input_graph_def.node:
        output_node = pruned.node.add()
        if node.name in masked_weights:
            output_node.op = "Const"
            output_node.name = node.name
            output_node.device = node.device
            output_node.attr["dtype"].CopyFrom(node.attr["T"])
            output_node.attr["value"].CopyFrom(
                tf.compat.v1.AttrValue(
                    tensor=tf.make_tensor_proto(masked_weights[node.name])
                )
            )
        else:
            output_node.CopyFrom(node)
    return tf.compat.v1.graph_util.extract_sub_graph(pruned, names)


def graph_def_from_checkpoint(
    checkpoint_dir: str, output_node_names: list[str]
) -> Any:
    """Freezes the newest TF1 checkpoint in `checkpoint_dir` into a GraphDef.

    Imports `<checkpoint>.meta` (devices cleared), restores the variables
    and converts them to constants, keeping what `output_node_names` need.

    Args:
        checkpoint_dir: A directory written by `tf.compat.v1.train.Saver`
            (or `MonitoredTrainingSession`).
        output_node_names: The output node names.

    Returns:
        The frozen `GraphDef`.

    Raises:
        TypeError: If `checkpoint_dir` is not a string or path, or
            `output_node_names` not a list.
        ValueError: If no checkpoint is found, or `output_node_names` is
            empty.

    Example:

    ```python
    frozen = graph_def_from_checkpoint("/tmp/train", ["softmax_linear/add"])
    ```
    """
    if not isinstance(checkpoint_dir, (str, bytes)) and not hasattr(
        checkpoint_dir, "__fspath__"
    ):
        raise TypeError(
            "`checkpoint_dir` must be a path. "
            f"Received: checkpoint_dir={checkpoint_dir!r}"
        )
    names = _check_output_node_names(output_node_names)
    checkpoint_path = tf.train.latest_checkpoint(str(checkpoint_dir))
    if checkpoint_path is None:
        raise ValueError(
            f"Could not find a checkpoint at: {checkpoint_dir}. "
            f"Received: checkpoint_dir={checkpoint_dir!r}"
        )
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(
            checkpoint_path + ".meta", clear_devices=True
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, checkpoint_path)
            return tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), names
            )


def strip_pruning_vars(
    checkpoint_dir: str,
    output_node_names: list[str],
    output_dir: str,
    filename: str,
) -> str:
    """Freezes the newest checkpoint, strips it, and writes a binary GraphDef.

    Args:
        checkpoint_dir: The checkpoint directory.
        output_node_names: The output node names.
        output_dir: Where to write; created if missing.
        filename: The file name, e.g. `"pruning_stripped.pb"`.

    Returns:
        The path written.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If no checkpoint is found, `output_node_names` is empty
            or `filename` is empty.

    Example:

    ```python
    strip_pruning_vars("/tmp/train", ["softmax_linear/add"], "/tmp",
                       "pruning_stripped.pb")
    ```
    """
    for name, value in (("output_dir", output_dir), ("filename", filename)):
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"`{name}` must be a non-empty string. "
                f"Received: {name}={value!r}"
            )
    names = _check_output_node_names(output_node_names)
    frozen = graph_def_from_checkpoint(checkpoint_dir, names)
    stripped = strip_pruning_vars_fn(frozen, names)
    return tf.io.write_graph(stripped, output_dir, filename, as_text=False)
