"""The cascade as one network: both stages score every candidate, one loss trains them jointly.

``CascadeModel`` is a ``tfrs.models.Model``: its one override point is ``compute_loss``, which
scores the request's candidates with both stages ([batch, list_size] each), hands them to a
cascade loss from ``models.losses`` (LCRON by default, or a baseline by name) and updates

- one mean tracker per loss term (``l_e2e``, ``l_single_retrieval``, UWL weights, ...), and
- the paper's cascade metrics (end-to-end Recall@gt@k1@k2, per-stage recall, NDCG, Kendall's
  tau; ``models.metrics.from_config``),

so Keras logs all of them (and the TensorBoard callback writes them) for train and eval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import features, losses, metrics
from models.config import LossConfig, MetricConfig, ModelConfig
from models.ranking_stage import RankingStage
from models.retrieval_tower import RetrievalStage

xf = features.transformed_name
STAGES: tuple[str, ...] = ("retrieval", "ranking")


class CascadeModel(tfrs.models.Model):
    """Retrieval (two-tower) and ranking (target attention) stages trained as one network.

    Args:
      vocabulary_sizes: embedding rows per vocabulary (``preprocessing.vocabulary_sizes``).
      list_size: candidates per request in the training examples (used once, to learn the
        names of the loss terms; the model itself takes any list size).
      model_config / loss_config / metric_config: the typed hyperparameters.

    Call: transformed features -> {"retrieval": [B, L], "ranking": [B, L]} logits.
    """

    def __init__(
        self,
        vocabulary_sizes: Mapping[str, int],
        list_size: int,
        model_config: ModelConfig | None = None,
        loss_config: LossConfig | None = None,
        metric_config: MetricConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_config = model_config or ModelConfig()
        self.loss_config = loss_config or LossConfig()
        self.metric_config = metric_config or MetricConfig()
        self.retrieval = RetrievalStage(vocabulary_sizes, self.model_config)
        self.ranking = RankingStage(vocabulary_sizes, self.model_config)
        self.cascade_loss = losses.get(self.loss_config, num_stages=len(STAGES))
        # The terms a loss returns depend on the loss: ask it once, on a dummy request.
        dummy = tf.zeros([1, list_size])
        names = sorted(self.cascade_loss([dummy, dummy], dummy, tf.ones([1, list_size])))
        self.term_trackers = {
            name: tf.keras.metrics.Mean(name=name) for name in names if name != "loss"
        }
        self.cascade_metrics = metrics.from_config(self.metric_config)

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        return {"retrieval": self.retrieval(inputs), "ranking": self.ranking(inputs)}

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        logits = self(inputs, training=training)
        labels = tf.cast(inputs[xf(features.LABEL)], tf.float32)
        mask = tf.cast(inputs[xf(features.MASK)], tf.float32)
        stage_logits = [logits[stage] for stage in STAGES]
        terms = self.cascade_loss(stage_logits, labels, mask)
        for name, tracker in self.term_trackers.items():
            tracker.update_state(terms[name])
        metrics.update_cascade_metrics(
            self.cascade_metrics, labels, {stage: logits[stage] for stage in STAGES}, mask
        )
        return terms["loss"]
