"""The one interface every cascade loss implements: a Keras layer returning named terms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses import targets


class CascadeLoss(tf.keras.layers.Layer):
    """A loss over all stages of a cascade at once, as a Keras layer.

    Subclasses implement :meth:`compute_terms`. A layer (not a ``tf.keras.losses.Loss``) because
    some losses own trainable variables (LCRON's uncertainty weights) that must be tracked by
    the model that holds the layer, and because every term is returned for logging.

    Call: ``loss_layer(stage_logits, labels, mask) -> dict[str, tf.Tensor]``
      stage_logits: sequence of [batch, list_size] float tensors, one per stage, first
        (retrieval) first.
      labels: [batch, list_size] float graded labels (``models.features`` LABEL).
      mask: [batch, list_size] 0/1 (any numeric dtype or bool), 1 for a real candidate.
      Returns "loss" (the scalar to minimise) and every named scalar term.

    Args:
      num_stages: number of stages in the cascade.
      gt_num: size of the ground-truth set (the gt_num largest labels).
    """

    #: Registry name of the loss (see ``models.losses.get``).
    method: str = ""

    def __init__(self, num_stages: int = 2, gt_num: int = 10, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"{self.method or 'cascade'}_loss")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_stages < 1:
            raise ValueError(f"{type(self).__name__}: num_stages must be >= 1, got {num_stages}")
        if gt_num < 1:
            raise ValueError(f"{type(self).__name__}: gt_num must be >= 1, got {gt_num}")
        self.num_stages = int(num_stages)
        self.gt_num = int(gt_num)
        self.stage_names = targets.stage_names(self.num_stages)

    def call(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        stage_logits = [tf.cast(s, tf.float32) for s in stage_logits]
        if len(stage_logits) != self.num_stages:
            raise ValueError(
                f"{type(self).__name__}: expected {self.num_stages} stage logits, "
                f"got {len(stage_logits)}"
            )
        labels = tf.cast(labels, tf.float32)
        mask = tf.cast(mask, tf.float32)
        named = {"labels": labels, "mask": mask}
        named.update({f"stage_logits[{i}]": s for i, s in enumerate(stage_logits)})
        for name, tensor in named.items():
            if tensor.shape.rank is not None and tensor.shape.rank != 2:
                raise ValueError(
                    f"{type(self).__name__}: {name} must be [batch, list_size], "
                    f"got shape {tensor.shape}"
                )
            if not tensor.shape.is_compatible_with(labels.shape):
                raise ValueError(
                    f"{type(self).__name__}: {name} has shape {tensor.shape}, "
                    f"labels have {labels.shape}"
                )
        return self.compute_terms(stage_logits, labels, mask)

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Returns {"loss": total, <term>: value, ...}; inputs already float32 and checked."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_stages=self.num_stages, gt_num=self.gt_num)
        return config

    def ground_truth(self, labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """y: [batch, list_size] 0/1 float, the gt_num valid items with the largest labels."""
        return targets.ground_truth_indicator(labels, mask, self.gt_num)
