"""Train the CNN of train_cnn.py on several machines with tf.distribute.MultiWorkerMirroredStrategy.

Every worker runs this same script; the TF_CONFIG variable names all workers and says which one this is. In each
step every worker trains on its share of the global batch, then the workers average their gradients, so all keep
the same weights. Then each tests the model on the whole test set; only the chief (the task of type "chief", or
worker 0 when there is none) saves it, as cnn_multiworker.keras in --models-dir. Keras 3.15 needs a small shim for
this that uses private Keras code: see the end of the file.

Two workers on one machine, each in its own terminal, started in either order:

    export TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                       "task": {"type": "worker", "index": 0}}'
    python examples/multiworker_cnn.py --data data/mnist.npz    # waits for worker 1, then trains

and the same in the second terminal with "index": 1. On several machines, list their host:port instead of
127.0.0.1. More: docs/distributed.md.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

HELP = "needs TF_CONFIG set to JSON with 'cluster' and 'task' on every worker; see docs/distributed.md"


def read_tf_config() -> tuple[str, int, bool]:
    """This worker's task type and index from TF_CONFIG, and whether it is the chief. Checked before TensorFlow
    starts (which takes seconds) and reads it too: a missing or malformed TF_CONFIG is one line at once."""
    text = os.environ.get("TF_CONFIG", "")
    try:
        config = json.loads(text)
        cluster, kind, index = config["cluster"], config["task"]["type"], config["task"]["index"]
        cluster[kind][index]  # noqa: B018 - this task must be listed in its cluster
    except (ValueError, KeyError, TypeError, IndexError) as error:
        problem = f"is malformed ({type(error).__name__}: {error})" if text.strip() else "is not set"
        sys.exit(f"error: TF_CONFIG {problem}: this example {HELP}")
    return kind, index, kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="PATH", help="a Keras-style .npz (default: keras.datasets.mnist)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training images (default 5)")
    parser.add_argument("--batch-size", type=int, default=384, help="images per step on each worker (default 384)")
    parser.add_argument("--learning-rate", type=float, default=6e-3, help="peak learning rate (default 6e-3)")
    parser.add_argument("--train-size", type=int, metavar="N", help="train on the first N training images only")
    parser.add_argument("--seed", type=int, default=1, help="the same on every worker (default 1)")
    parser.add_argument("--models-dir", default="models", help="where the chief saves the model (default models)")
    args = parser.parse_args()
    kind, index, chief = read_tf_config()

    # TensorFlow only now, after the checks. train_cnn.py sits in the repository root, one folder up from this
    # file: put that folder on the import path, so that this runs from any folder.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import keras
    import numpy as np
    import tensorflow as tf

    from train_cnn import build_model, load_data, one_cycle

    # The strategy first: it starts this worker's server and waits for the others before any other TensorFlow op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_keras_multiworker_logs()  # the shim, part 2 (see the end of this file)
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    x_train, y_train = x_train[: args.train_size, ..., None], y_train[: args.train_size]  # add a channel axis
    replicas, global_batch = strategy.num_replicas_in_sync, args.batch_size * strategy.num_replicas_in_sync
    print(f"{kind} {index}: global batch {global_batch} ({replicas} replicas), {len(x_train)} images", flush=True)

    # Each worker shuffles the same way (same seed), then takes every n-th batch: its share of each global batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
               .shuffle(len(x_train), seed=args.seed).batch(global_batch).with_options(options))

    # In the scope, the weights (and, in fit(), Adam's) are mirrored on every worker, kept equal by averaging.
    with strategy.scope():
        model = build_model()
        steps = -(-len(x_train) // global_batch) * args.epochs  # ceil: the last batch of an epoch may be short
        model.compile(optimizer=keras.optimizers.Adam(one_cycle(args.learning_rate, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        defer_build(model)  # the shim, part 1 (see the end of this file)
        started = time.perf_counter()
        model.fit(batches, epochs=args.epochs, verbose=2)
        trained = f"trained {time.perf_counter() - started:.1f} s"

    # Test on all 10,000 images in this process: no collectives (model.evaluate would shard the test set across
    # the workers and wait for them), so every worker prints the same full answer, whenever it gets here.
    probabilities = np.concatenate([model(x_test[start : start + 2000, ..., None], training=False).numpy()
                                    for start in range(0, len(x_test), 2000)])
    accuracy = float((probabilities.argmax(axis=1) == y_test).mean())
    name = f"{kind} {index}" + (" (chief)" if chief and kind != "chief" else "")
    if not chief:
        print(f"{name}: test accuracy {accuracy:.2%}, {trained} (not saved: not the chief)")
        return 0
    # Only the chief writes, atomically: a temp file beside the target, renamed over it once whole.
    os.makedirs(args.models_dir, exist_ok=True)
    path = os.path.join(args.models_dir, "cnn_multiworker.keras")
    temp = os.path.join(args.models_dir, f".tmp-{os.getpid()}-cnn_multiworker.keras")
    try:
        model.save(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    print(f"{name}: test accuracy {accuracy:.2%}, {trained} -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# The shim: Keras 3.15 under MultiWorkerMirroredStrategy fails in two places (keras-team/keras#20585). It uses
# private Keras code, which is why it lives here and not in train_cnn.py. Remove it once Keras fixes both.
# ---------------------------------------------------------------------------------------------------------------------
def defer_build(model) -> None:
    """Keras passes the whole (x, y) batch to strategy.reduce() when it builds a model made in this strategy's
    scope, which the strategy cannot do. Forgetting the scope just before fit() defers the build to the first
    traced step; fit() itself still runs inside the scope."""
    model._distribute_strategy = None


def patch_keras_multiworker_logs() -> None:
    """Keras averages each step's scalar logs (loss, accuracy) over the workers along "axis 0", which scalars do
    not have: average them with axis=None instead. The gradients are all-reduced by the strategy, unaffected."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer  # private

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica


if __name__ == "__main__":
    sys.exit(main())
