"""The tf.distribute strategy named by ``TrainerConfig.distribution``.

"default" is the default strategy (this process, one device). The multi-worker strategies read
the cluster from the ``TF_CONFIG`` environment variable, as TFX's Trainer on Vertex / Kubeflow
sets it; the model code does not change with the strategy.
"""

from __future__ import annotations

import tensorflow as tf


def strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for ``name`` (see ``models.config.DISTRIBUTION_STRATEGIES``)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.experimental.ParameterServerStrategy(resolver)
    raise ValueError(f"unknown distribution strategy {name!r}")
