"""The cascade as one network: both stages score every candidate, one loss trains them jointly.

``CascadeModel`` is a ``tfrs.models.Model``: its one override point is ``compute_loss``, which
scores the request's candidates with both stages ([batch, list_size] each), hands them to a
cascade loss from ``models.losses`` (LCRON by default, or a baseline by name) and updates

- one mean tracker per loss term (``l_e2e``, ``l_single_retrieval``, UWL weights, ...), and
- the paper's cascade metrics (end-to-end Recall@gt@k1@k2, per-stage recall, NDCG, Kendall's
  tau; ``models.metrics.from_config``),

so Keras logs all of them (and the TensorBoard callback writes them) for train and eval.

The cascade metrics sort and compare every pair of a request's candidates (Kendall's tau is
O(list_size^2) per request): in training they cost about a sixth of a step at list 40
(``benchmarks/train_bench.py --profile``) and tell nothing the loss needs. So while training,
they are updated on every ``train_metrics_every``-th step (and on the first step after Keras
resets them, so that every epoch logs them): the logged train figures are means over those
steps' requests. Evaluation updates them on every batch.
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
      train_metrics_every: update the cascade metrics on every n-th training step (1: every
        step); the loss terms are tracked on every step.

    Call: transformed features -> {"retrieval": [B, L], "ranking": [B, L]} logits.
    """

    def __init__(
        self,
        vocabulary_sizes: Mapping[str, int],
        list_size: int,
        model_config: ModelConfig | None = None,
        loss_config: LossConfig | None = None,
        metric_config: MetricConfig | None = None,
        train_metrics_every: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if train_metrics_every < 1:
            raise ValueError(f"train_metrics_every must be >= 1, got {train_metrics_every}")
        self.train_metrics_every = int(train_metrics_every)
        self.model_config = model_config or ModelConfig()
        self.loss_config = loss_config or LossConfig()
        self.metric_config = metric_config or MetricConfig()
        self.retrieval = RetrievalStage(vocabulary_sizes, self.model_config)
        self.ranking = RankingStage(vocabulary_sizes, self.model_config)
        self.cascade_loss = losses.get(self.loss_config, num_stages=len(STAGES))
        # The terms a loss returns depend on the loss: ask it once, on an all-padding request
        # (any list layout holds it).
        dummy = tf.zeros([1, list_size])
        names = sorted(self.cascade_loss([dummy, dummy], dummy, dummy))
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

        def update_metrics() -> None:
            for role, metric in self.cascade_metrics.items():
                if role == "cascade_recall":
                    metric.update_state(labels, stage_logits, mask)
                else:
                    metric.update_state(labels, logits[role.split("_", 1)[0]], mask)

        optimizer = getattr(self, "optimizer", None)  # absent before compile()
        if not training or self.train_metrics_every == 1 or optimizer is None:
            update_metrics()
        else:
            due = tf.equal(optimizer.iterations % self.train_metrics_every, 0)
            tf.cond(due | self._metrics_empty(), update_metrics, lambda: None)
        return terms["loss"]

    def _metrics_empty(self) -> tf.Tensor:
        """True while no cascade metric holds a value (right after Keras' per-epoch reset)."""
        counts = [m.count for m in self.cascade_metrics.values() if hasattr(m, "count")]
        if not counts:
            return tf.constant(True)
        return tf.reduce_all([tf.equal(c, 0.0) for c in counts])
