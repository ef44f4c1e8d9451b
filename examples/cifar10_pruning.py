"""contrib's cifar10 pruning example, ported: a TF1 graph on Fashion-MNIST.

The network is contrib's `cifar10_pruning.inference` (the TF CIFAR-10
tutorial CNN): conv1 5x5x64, max pool, LRN, conv2 5x5x64, LRN, max pool,
local3 (384), local4 (192), softmax_linear (10), weight decay 0.004 on the
two local layers. Every weight goes through `pruning.apply_mask(w, scope)`;
biases are not pruned. Training is `cifar10_train.train()`'s: a
`tf.compat.v1` graph and session, SGD with an exponentially decayed learning
rate, and after each step

    sess.run(train_op)
    sess.run(mask_update_op)   # pruning_obj.conditional_mask_update_op()

The images are Fashion-MNIST's (28x28x1, see `fashion_mnist_data.py` for
where they come from), not CIFAR-10's. At the end the newest checkpoint is
stripped with `strip_pruning_vars_lib` (contrib's strip tool) and the
stripped GraphDef is checked to predict exactly what the pruned graph does.

Usage, from the repository root:

    python examples/cifar10_pruning.py --pruning_hparams=name=cifar10_pruning,\
begin_pruning_step=200,end_pruning_step=800,target_sparsity=0.9,\
sparsity_function_begin_step=200,sparsity_function_end_step=800
    python examples/cifar10_pruning.py --synthetic   # generated data, seconds

`--pruning_hparams` takes contrib's hparams string (contrib's README:
`name=cifar10_pruning,begin_pruning_step=10000,end_pruning_step=100000,
target_sparsity=0.9,sparsity_function_begin_step=10000,
sparsity_function_end_step=100000`); the empty default is contrib's
defaults (50% at step 100).
"""

import os
import re
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from model_pruning.contrib.python import pruning
from model_pruning.contrib.python import strip_pruning_vars_lib

try:  # Run as a script: this file's directory is on sys.path.
    import fashion_mnist_data
except ImportError:  # Run as `python -m examples.cifar10_pruning`.
    from examples import fashion_mnist_data

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "train_dir",
    "/tmp/cifar10_pruning_train",
    "Where to write event logs, the checkpoint and the stripped graph.",
)
flags.DEFINE_string(
    "pruning_hparams",
    "",
    "Comma separated list of pruning-related hyperparameters.",
)
flags.DEFINE_integer("max_steps", 1000, "Number of batches to run.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float("learning_rate", 0.05, "Initial SGD learning rate.")
flags.DEFINE_integer("log_every", 100, "Steps between log lines/summaries.")
flags.DEFINE_string(
    "data_dir", None, "Directory with the four Fashion-MNIST IDX .gz files."
)
flags.DEFINE_bool(
    "synthetic",
    False,
    "Use 512 generated training and 256 test images (no download), batch "
    "size 32, 20 steps, learning rate 0.1, log every 5 steps and pruning to "
    "50% between steps 2 and 12, unless those flags are given explicitly.",
)
flags.DEFINE_integer("seed", 0, "Random seed.")

NUM_CLASSES = 10
IMAGE_SIZE = 28
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 512, 256
SYNTHETIC_HPARAMS = (
    "name=cifar10_pruning,pruning_frequency=2,begin_pruning_step=2,"
    "end_pruning_step=12,target_sparsity=0.5,sparsity_function_begin_step=2,"
    "sparsity_function_end_step=12"
)
# contrib's constants (cifar10_pruning.py).
NUM_EPOCHS_PER_DECAY = 350.0
LEARNING_RATE_DECAY_FACTOR = 0.1


def _synthetic_split(count: int, rng: np.random.Generator) -> tuple:
    """Images whose class is a bright horizontal band, plus noise."""
    labels = rng.integers(0, NUM_CLASSES, count)
    images = rng.uniform(0.0, 0.3, (count, IMAGE_SIZE, IMAGE_SIZE))
    for i, label in enumerate(labels):
        row = 2 + int(label) * 2
        images[i, row : row + 3, 4:24] += 0.7
    return images.astype(np.float32), labels.astype(np.int64)


def load_data() -> tuple:
    """Returns `((x_train, y_train), (x_test, y_test))`, images NHWC."""
    if FLAGS.synthetic:
        rng = np.random.default_rng(FLAGS.seed)
        train = _synthetic_split(SYNTHETIC_TRAIN, rng)
        test = _synthetic_split(SYNTHETIC_TEST, rng)
    else:
        try:
            train, test = fashion_mnist_data.load_fashion_mnist(FLAGS.data_dir)
        except RuntimeError as error:
            sys.exit(f"Error: {error}")
    return tuple((x[..., np.newaxis], y) for x, y in (train, test))


def _setting(name: str, synthetic_value):
    if FLAGS.synthetic and not FLAGS[name].present:
        return synthetic_value
    return FLAGS[name].value


def _activation_summary(x):
    tf.compat.v1.summary.histogram(x.op.name + "/activations", x)
    tf.compat.v1.summary.scalar(
        x.op.name + "/sparsity", tf.math.zero_fraction(x)
    )


def _variable_with_weight_decay(name, shape, stddev, wd):
    var = tf.compat.v1.get_variable(
        name,
        shape,
        initializer=tf.compat.v1.truncated_normal_initializer(stddev=stddev),
        dtype=tf.float32,
    )
    if wd is not None:
        weight_decay = tf.multiply(tf.nn.l2_loss(var), wd, name="weight_loss")
        tf.compat.v1.add_to_collection("losses", weight_decay)
    return var


def _bias(name, shape, value):
    return tf.compat.v1.get_variable(
        name, shape, initializer=tf.compat.v1.constant_initializer(value)
    )


def inference(images):
    """contrib's cifar10 network with a mask on every weight; returns logits."""
    channels = images.get_shape()[-1]
    with tf.compat.v1.variable_scope("conv1") as scope:
        kernel = _variable_with_weight_decay(
            "weights", shape=[5, 5, channels, 64], stddev=5e-2, wd=0.0
        )
        conv = tf.nn.conv2d(
            images, pruning.apply_mask(kernel, scope), 1, padding="SAME"
        )
        biases = _bias("biases", [64], 0.0)
        conv1 = tf.nn.relu(tf.nn.bias_add(conv, biases), name=scope.name)
        _activation_summary(conv1)
    pool1 = tf.nn.max_pool2d(conv1, 3, 2, padding="SAME", name="pool1")
    norm1 = tf.nn.lrn(
        pool1, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm1"
    )
    with tf.compat.v1.variable_scope("conv2") as scope:
        kernel = _variable_with_weight_decay(
            "weights", shape=[5, 5, 64, 64], stddev=5e-2, wd=0.0
        )
        conv = tf.nn.conv2d(
            norm1, pruning.apply_mask(kernel, scope), 1, padding="SAME"
        )
        biases = _bias("biases", [64], 0.1)
        conv2 = tf.nn.relu(tf.nn.bias_add(conv, biases), name=scope.name)
        _activation_summary(conv2)
    norm2 = tf.nn.lrn(
        conv2, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm2"
    )
    pool2 = tf.nn.max_pool2d(norm2, 3, 2, padding="SAME", name="pool2")
    with tf.compat.v1.variable_scope("local3") as scope:
        dim = int(np.prod(pool2.get_shape()[1:]))
        reshape = tf.reshape(pool2, [-1, dim])
        weights = _variable_with_weight_decay(
            "weights", shape=[dim, 384], stddev=0.04, wd=0.004
        )
        biases = _bias("biases", [384], 0.1)
        local3 = tf.nn.relu(
            tf.matmul(reshape, pruning.apply_mask(weights, scope)) + biases,
            name=scope.name,
        )
        _activation_summary(local3)
    with tf.compat.v1.variable_scope("local4") as scope:
        weights = _variable_with_weight_decay(
            "weights", shape=[384, 192], stddev=0.04, wd=0.004
        )
        biases = _bias("biases", [192], 0.1)
        local4 = tf.nn.relu(
            tf.matmul(local3, pruning.apply_mask(weights, scope)) + biases,
            name=scope.name,
        )
        _activation_summary(local4)
    with tf.compat.v1.variable_scope("softmax_linear") as scope:
        weights = _variable_with_weight_decay(
            "weights", [192, NUM_CLASSES], stddev=1 / 192.0, wd=0.0
        )
        biases = _bias("biases", [NUM_CLASSES], 0.0)
        softmax_linear = tf.add(
            tf.matmul(local4, pruning.apply_mask(weights, scope)),
            biases,
            name=scope.name,
        )
        _activation_summary(softmax_linear)
    return softmax_linear


def loss(logits, labels):
    """Mean cross entropy plus the weight decay terms ("losses")."""
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits, name="cross_entropy_per_example"
    )
    tf.compat.v1.add_to_collection(
        "losses", tf.reduce_mean(cross_entropy, name="cross_entropy")
    )
    return tf.add_n(tf.compat.v1.get_collection("losses"), name="total_loss")


def train(total_loss, global_step, examples_per_epoch, batch_size, rate):
    """SGD with contrib's exponentially decayed learning rate."""
    decay_steps = int(examples_per_epoch / batch_size * NUM_EPOCHS_PER_DECAY)
    lr = tf.compat.v1.train.exponential_decay(
        rate,
        global_step,
        max(decay_steps, 1),
        LEARNING_RATE_DECAY_FACTOR,
        staircase=True,
    )
    tf.compat.v1.summary.scalar("learning_rate", lr)
    tf.compat.v1.summary.scalar("total_loss", total_loss)
    opt = tf.compat.v1.train.GradientDescentOptimizer(lr)
    return opt.minimize(total_loss, global_step=global_step)


def evaluate(sess, images, logits, x, y, batch_size=500):
    """Precision @ 1 over `(x, y)`."""
    correct = 0
    for start in range(0, len(x), batch_size):
        batch = sess.run(logits, {images: x[start : start + batch_size]})
        correct += int(np.sum(batch.argmax(1) == y[start : start + batch_size]))
    return correct / len(x)


def _print_sparsity(sess):
    masks = pruning.get_masks()
    values = sess.run(pruning.get_weight_sparsity())
    sizes = [int(np.prod(m.shape)) for m in masks]
    for mask, value in zip(masks, values, strict=True):
        print(f"  {mask.op.name:<24s} sparsity {value:.4f}")
    total = float(np.dot(values, sizes) / sum(sizes))
    print(f"final sparsity: {total:.4f} (all masked weights)")
    return total


def _check_stripped(train_dir, output_node, x_test):
    """Strips the newest checkpoint and compares it with the pruned graph.

    `output_node` is the logits' op name. As in contrib, re-entering a
    variable scope in `apply_mask` uses its name once more, so it is
    `softmax_linear/softmax_linear_1` (contrib's README, stripping its eval
    graph, named `softmax_linear/softmax_linear_2`).
    """
    frozen = strip_pruning_vars_lib.graph_def_from_checkpoint(
        train_dir, [output_node]
    )
    path = strip_pruning_vars_lib.strip_pruning_vars(
        train_dir, [output_node], train_dir, "pruning_stripped.pb"
    )
    stripped = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())

    def run(graph_def):
        with tf.Graph().as_default() as graph:
            tf.graph_util.import_graph_def(graph_def, name="")
            with tf.compat.v1.Session(graph=graph) as sess:
                return sess.run(output_node + ":0", {"images:0": x_test[:256]})

    def count(graph_def):
        return sum(bool(re.search("mask$", n.name)) for n in graph_def.node)

    identical = np.array_equal(run(frozen), run(stripped))
    print(
        f"stripped graph: {path} ({count(frozen)} mask nodes -> "
        f"{count(stripped)}), outputs identical: {identical}"
    )
    return identical


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    batch_size = _setting("batch_size", 32)
    max_steps = _setting("max_steps", 20)
    log_every = _setting("log_every", 5)
    hparams_string = _setting("pruning_hparams", SYNTHETIC_HPARAMS)
    (x_train, y_train), (x_test, y_test) = load_data()
    os.makedirs(FLAGS.train_dir, exist_ok=True)
    rng = np.random.default_rng(FLAGS.seed)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(FLAGS.seed)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        images = tf.compat.v1.placeholder(
            tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 1], name="images"
        )
        labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        logits = inference(images)
        total_loss = loss(logits, labels)
        train_op = train(
            total_loss,
            global_step,
            len(x_train),
            batch_size,
            _setting("learning_rate", 0.1),
        )

        # Parse pruning hyperparameters
        pruning_hparams = pruning.get_pruning_hparams().parse(hparams_string)
        # Create a pruning object using the pruning hyperparameters
        pruning_obj = pruning.Pruning(pruning_hparams, global_step=global_step)
        # The masks update only when the step is in [begin_pruning_step,
        # end_pruning_step] and pruning_frequency steps have passed.
        mask_update_op = pruning_obj.conditional_mask_update_op()
        pruning_obj.add_pruning_summaries()
        pruning_obj.print_hparams()
        summary_op = tf.compat.v1.summary.merge_all()
        saver = tf.compat.v1.train.Saver()

        with tf.compat.v1.Session() as sess:
            writer = tf.compat.v1.summary.FileWriter(
                FLAGS.train_dir, sess.graph
            )
            sess.run(tf.compat.v1.global_variables_initializer())
            start = time.time()
            for step in range(1, max_steps + 1):
                batch = rng.choice(len(x_train), batch_size, replace=False)
                feed = {images: x_train[batch], labels: y_train[batch]}
                _, loss_value = sess.run([train_op, total_loss], feed)
                # Update the masks
                sess.run(mask_update_op)
                if step % log_every == 0 or step == max_steps:
                    writer.add_summary(sess.run(summary_op, feed), step)
                    print(
                        f"step {step}, loss = {loss_value:.3f} "
                        f"({(time.time() - start) / step:.3f} sec/batch)"
                    )
            saver.save(
                sess,
                os.path.join(FLAGS.train_dir, "model.ckpt"),
                global_step=global_step,
            )
            writer.close()
            accuracy = evaluate(sess, images, logits, x_test, y_test)
            print("sparsity per weight:")
            sparsity = _print_sparsity(sess)
    print(f"final accuracy: {accuracy:.4f} (precision @ 1, test set)")
    identical = _check_stripped(FLAGS.train_dir, logits.op.name, x_test)
    return 0 if identical and np.isfinite(sparsity) else 1


if __name__ == "__main__":
    app.run(main)
