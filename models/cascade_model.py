"""The cascade as one network: both stages score every candidate, one loss trains them jointly.

``CascadeModel`` is a ``tfrs.models.Model``: its one override point is ``compute_loss``, which
scores the request's candidates with both stages ([batch, list_size] each), hands them to a
cascade loss from ``models.losses`` (LCRON by default, or a baseline by name) and updates

- one mean tracker per loss term (``l_e2e``, ``l_single_retrieval``, UWL weights, ...), and
- the paper's cascade metrics (end-to-end Recall@gt@k1@k2, per-stage recall, NDCG, Kendall's
  tau; ``models.metrics.from_config``),

so Keras logs all of them (and the TensorBoard callback writes them) for train and eval.

With ``LossConfig.corpus_weight > 0`` the retrieval stage also gets the corpus term
(``models.losses.corpus``: each request's ground truth against the batch's items, logQ-corrected),
added to the cascade loss with that weight and logged as ``l_corpus``.
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
      item_log_q: log sampling probability per transformed video id
        (``models.data.item_sampling_log_q``); needed when ``loss_config.corpus_weight > 0``
        and ``corpus_logq``.

    Call: transformed features -> {"retrieval": [B, L], "ranking": [B, L]} logits.
    """

    def __init__(
        self,
        vocabulary_sizes: Mapping[str, int],
        list_size: int,
        model_config: ModelConfig | None = None,
        loss_config: LossConfig | None = None,
        metric_config: MetricConfig | None = None,
        item_log_q: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.corpus_tracker = None
        if self.loss_config.corpus_weight > 0:
            if self.loss_config.corpus_logq and item_log_q is None:
                raise ValueError(
                    "CascadeModel: corpus_logq needs item_log_q (models.data.item_sampling_log_q)"
                )
            self.item_log_q = None if item_log_q is None else tf.constant(item_log_q, tf.float32)
            self.corpus_tracker = tf.keras.metrics.Mean(name="l_corpus")

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
        if self.corpus_tracker is None:
            return terms["loss"]
        l_corpus = self.corpus_term(inputs, labels, mask)
        self.corpus_tracker.update_state(l_corpus)
        return terms["loss"] + self.loss_config.corpus_weight * l_corpus

    def corpus_term(
        self, inputs: Mapping[str, tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        """The retrieval stage's corpus term (``models.losses.corpus``) on a batch."""
        config = self.loss_config
        query = self.retrieval.query_tower(inputs)  # [B, D]
        candidates = self.retrieval.candidate_tower(inputs)  # [B, L, D]
        ids = tf.cast(inputs[xf("video_id")], tf.int64)
        positives = losses.ground_truth_indicator(labels, mask, config.gt_num)
        samples = positives if config.corpus_negatives == "in_batch" else mask
        log_q = tf.gather(self.item_log_q, ids) if config.corpus_logq else None
        return losses.corpus_softmax_loss(
            query, candidates, ids, positives, samples, log_q, self.retrieval.temperature
        )
