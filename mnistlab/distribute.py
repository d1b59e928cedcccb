"""tf.distribute for the training scripts: which strategy ``--distribute`` asks for, who writes files, and the
one shim around Keras 3.15's multi-worker bugs (keras-team/keras#20585).

Everything private to Keras stays in this module; the scripts only see ``strategy.scope()``.
"""

from __future__ import annotations

import argparse
import json
import os

from mnistlab import UserError

import keras
import tensorflow as tf


def make_strategy(args: argparse.Namespace) -> tf.distribute.Strategy:
    """The tf.distribute strategy for --distribute; the default strategy is plain single-device training."""
    if args.distribute == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if args.distribute == "multiworker":
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
            cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]  # noqa: B018 - shape check
        except (KeyError, ValueError, TypeError):
            raise UserError(
                "--distribute multiworker needs TF_CONFIG set to JSON with 'cluster' and 'task' on every worker; "
                "see the README section on several machines"
            ) from None
        patch_keras_multiworker_logs()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only one process writes files: the chief (or worker 0 when the cluster names no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def worker_id(strategy: tf.distribute.Strategy) -> int | None:
    """This process's index among the workers of a multi-worker run; None on one machine."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver is not None and resolver.cluster_spec().as_dict() else None


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


# ---------------------------------------------------------------------------------------------------------------
# The shim: Keras 3.15 under MultiWorkerMirroredStrategy (keras-team/keras#20585). Remove when Keras fixes it.
# ---------------------------------------------------------------------------------------------------------------
def defer_build(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Keras 3.15 passes the whole (x, y) batch to strategy.reduce() while building a model made in a
    MultiWorkerMirroredStrategy scope, which that strategy cannot do. Forgetting the scope defers the build to
    the first traced step; fit() runs inside the scope. Called by ``training.Run.callbacks``, i.e. just before
    fit() starts; a no-op under every other strategy."""
    if is_multiworker(strategy):
        model._distribute_strategy = None


def patch_keras_multiworker_logs() -> None:
    """Keras 3.15 averages each step's scalar logs over "axis 0" across workers, which fails.

    Under MultiWorkerMirroredStrategy the logs (loss, accuracy) are averaged across workers with ``axis=None``
    instead; every other strategy and reduction goes to Keras unchanged. Gradients are all-reduced by the
    strategy itself and are not affected.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer  # private, hence this shim

    original = tf_trainer.reduce_per_replica
    if getattr(original, "patched_for_multiworker", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.patched_for_multiworker = True
    tf_trainer.reduce_per_replica = reduce_per_replica
