"""The cascade as one network: every stage scores every candidate, one loss trains them jointly.

The stages come from ``ModelConfig.stages`` (``models.config.StageConfig``: name, model kind,
keep, serving role), first (retrieval) stage first: two by default (two-tower retrieval, DIN
ranking), any number N >= 2 by configuration (e.g. retrieval, a light MLP pre-ranking, ranking).

``CascadeModel`` is a ``tfrs.models.Model``: its one override point is ``compute_loss``, which
scores the request's candidates with every stage ([batch, list_size] each), hands them to a
cascade loss from ``models.losses`` (LCRON by default, or a baseline by name) and updates

- one mean tracker per loss term (``l_e2e``, ``l_single_retrieval``, UWL weights, ...), and
- the paper's cascade metrics (end-to-end Recall@gt@k1@...@kN, per-stage recall, NDCG,
  Kendall's tau; ``models.metrics.from_config``),

so Keras logs all of them (and the TensorBoard callback writes them) for train and eval.

With ``LossConfig.corpus_weight > 0`` the retrieval stage also gets the corpus term
(``models.losses.corpus``: each request's ground truth against the batch's items, logQ-corrected),
added to the cascade loss with that weight and logged as ``l_corpus``.

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
from models.config import LossConfig, MetricConfig, ModelConfig, StageConfig, check_cascade
from models.prerank_stage import PreRankingStage
from models.ranking_stage import RankingStage
from models.retrieval_tower import RetrievalStage

xf = features.transformed_name
# The default cascade's stage names (``models.config.DEFAULT_STAGES``).
STAGES: tuple[str, ...] = ("retrieval", "ranking")
# Model kind (``StageConfig.kind``) -> its Keras layer: ``layer(vocabulary_sizes, config,
# name=...)``, called on transformed features -> [B, L] logits.
STAGE_LAYERS: dict[str, type[tf.keras.layers.Layer]] = {
    "two_tower": RetrievalStage,
    "mlp": PreRankingStage,
    "din": RankingStage,
}


def build_stage(
    stage: StageConfig, vocabulary_sizes: Mapping[str, int], config: ModelConfig
) -> tf.keras.layers.Layer:
    """The Keras layer of one stage, named after it."""
    return STAGE_LAYERS[stage.kind](vocabulary_sizes, config, name=stage.name)


class CascadeModel(tfrs.models.Model):
    """The configured stages (``ModelConfig.stages``) trained as one network.

    Attributes (the export's contract):
      stage_configs: ``tuple[StageConfig, ...]`` in cascade order.
      stage_layers: ``dict[str, tf.keras.layers.Layer]``, stage name -> layer, same order. The
        retrieval-role layer is a ``RetrievalStage`` (``query_tower(inputs) -> [B, D]``,
        ``candidate_tower(inputs) -> [B, L, D]``, ``temperature``); every layer is callable as
        ``layer(transformed_inputs) -> [B, L]`` logits.
      retrieval / ranking: the first and the last stage's layers (aliases).

    Args:
      vocabulary_sizes: embedding rows per vocabulary (``preprocessing.vocabulary_sizes``).
      list_size: candidates per request in the training examples (used once, to learn the
        names of the loss terms; the model itself takes any list size).
      model_config / loss_config / metric_config: the typed hyperparameters.
      item_log_q: log sampling probability per transformed video id
        (``models.data.item_sampling_log_q``); needed when ``loss_config.corpus_weight > 0``
        and ``corpus_logq``.
      train_metrics_every: update the cascade metrics on every n-th training step (1: every
        step); the loss terms are tracked on every step.

    Call: transformed features -> {stage name: [B, L] logits} in cascade order.
    """

    def __init__(
        self,
        vocabulary_sizes: Mapping[str, int],
        list_size: int,
        model_config: ModelConfig | None = None,
        loss_config: LossConfig | None = None,
        metric_config: MetricConfig | None = None,
        item_log_q: Any = None,
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
        # No list-size check here: the model takes any list size (the configuration checks the
        # pipeline's list size against the stages' keeps).
        check_cascade(self.model_config, self.loss_config, self.metric_config)
        self.stage_configs: tuple[StageConfig, ...] = tuple(self.model_config.stages)
        self.stage_layers: dict[str, tf.keras.layers.Layer] = {
            stage.name: build_stage(stage, vocabulary_sizes, self.model_config)
            for stage in self.stage_configs
        }
        self.retrieval = self.stage_layers[self.stage_configs[0].name]
        self.ranking = self.stage_layers[self.stage_configs[-1].name]
        self.cascade_loss = losses.get(
            self.loss_config,
            num_stages=len(self.stage_configs),
            stage_keep=self.model_config.stage_keeps,
        )
        # The terms a loss returns depend on the loss: ask it once, on an all-padding request
        # (any list layout holds it).
        dummy = tf.zeros([1, list_size])
        names = sorted(self.cascade_loss([dummy] * len(self.stage_configs), dummy, dummy))
        self.term_trackers = {
            name: tf.keras.metrics.Mean(name=name) for name in names if name != "loss"
        }
        self.cascade_metrics = metrics.from_config(self.metric_config, self.stage_configs)
        self.corpus_tracker = None
        if self.loss_config.corpus_weight > 0:
            if self.loss_config.corpus_logq and item_log_q is None:
                raise ValueError(
                    "CascadeModel: corpus_logq needs item_log_q (models.data.item_sampling_log_q)"
                )
            self.item_log_q = None if item_log_q is None else tf.constant(item_log_q, tf.float32)
            self.corpus_tracker = tf.keras.metrics.Mean(name="l_corpus")

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        return {name: layer(inputs) for name, layer in self.stage_layers.items()}

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stage_configs)

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        logits = self(inputs, training=training)
        labels = tf.cast(inputs[xf(features.LABEL)], tf.float32)
        mask = tf.cast(inputs[xf(features.MASK)], tf.float32)
        stage_logits = [logits[stage] for stage in self.stage_names]
        terms = self.cascade_loss(stage_logits, labels, mask)
        for name, tracker in self.term_trackers.items():
            tracker.update_state(terms[name])

        def update_metrics() -> None:
            metrics.update_cascade_metrics(
                self.cascade_metrics,
                labels,
                {stage: logits[stage] for stage in self.stage_names},
                mask,
            )

        optimizer = getattr(self, "optimizer", None)  # absent before compile()
        if not training or self.train_metrics_every == 1 or optimizer is None:
            update_metrics()
        else:
            due = tf.equal(optimizer.iterations % self.train_metrics_every, 0)
            tf.cond(due | self._metrics_empty(), update_metrics, lambda: None)
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

    def _metrics_empty(self) -> tf.Tensor:
        """True while no cascade metric holds a value (right after Keras' per-epoch reset)."""
        counts = [m.count for m in self.cascade_metrics.values() if hasattr(m, "count")]
        if not counts:
            return tf.constant(True)
        return tf.reduce_all([tf.equal(c, 0.0) for c in counts])
