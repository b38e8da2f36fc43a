"""Stage 1, retrieval: a two-tower model (TensorFlow Recommenders) over transformed features.

    query tower:     context embedding ++ masked mean of the behaviour sequence -> MLP -> q [B, D]
    candidate tower: candidate features (ids, upload type and time, duration)  -> MLP -> c [.., D]
    score(q, c) = <q, c> / temperature

The candidate tower sees no request-dependent feature, so candidate embeddings can be computed
once per item and indexed (``tfrs.layers.factorized_top_k.BruteForce`` in the export, or an
external ANN index through the ``candidate_embedding`` signature).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from models import features
from models.config import ModelConfig
from models.feature_embeddings import CandidateFeatures, ContextEmbedding, ItemIdEmbedding, mlp

xf = features.transformed_name


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of ``values`` [B, S, E] where ``mask`` [B, S] is 1; zeros if none."""
    mask = tf.cast(mask, values.dtype)[..., None]
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class QueryTower(tf.keras.layers.Layer):
    """Transformed context + behaviour sequence -> query embedding [batch, output_dim]."""

    def __init__(
        self, vocabulary_sizes: Mapping[str, int], config: ModelConfig, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.context = ContextEmbedding(vocabulary_sizes, config.embedding_dim, name="context")
        self.sequence_items = ItemIdEmbedding(
            vocabulary_sizes, config.embedding_dim, name="sequence_items"
        )
        self.mlp = mlp(config.retrieval_hidden, config.retrieval_output_dim, name="query_mlp")

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        sequence = self.sequence_items(
            inputs[xf("seq_video_id")],
            inputs[xf("seq_author_id")],
            inputs[xf("seq_category_level_two")],
        )  # [B, S, 3 * dim]
        pooled = masked_mean(sequence, inputs[xf(features.SEQ_MASK)])
        return self.mlp(tf.concat([self.context(inputs), pooled], axis=-1))


class CandidateTower(tf.keras.layers.Layer):
    """Transformed item features of any leading shape [...] -> embedding [..., output_dim]."""

    def __init__(
        self, vocabulary_sizes: Mapping[str, int], config: ModelConfig, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.features = CandidateFeatures(vocabulary_sizes, config.embedding_dim, name="item")
        self.mlp = mlp(config.retrieval_hidden, config.retrieval_output_dim, name="candidate_mlp")

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.mlp(self.features(inputs))


class RetrievalStage(tf.keras.layers.Layer):
    """Both towers; ``call`` scores every candidate of each request: [B, list_size] logits."""

    def __init__(
        self, vocabulary_sizes: Mapping[str, int], config: ModelConfig, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "retrieval")
        super().__init__(**kwargs)
        self.temperature = float(config.retrieval_temperature)
        self.query_tower = QueryTower(vocabulary_sizes, config, name="query_tower")
        self.candidate_tower = CandidateTower(vocabulary_sizes, config, name="candidate_tower")

    def score(self, query: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """<q, c> / temperature for q [B, D] and c [B, N, D] -> [B, N]."""
        return tf.einsum("bd,bnd->bn", query, candidates) / self.temperature

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.score(self.query_tower(inputs), self.candidate_tower(inputs))
