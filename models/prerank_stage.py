"""A light pre-ranking stage (kind "mlp"): context and candidate features through a small MLP.

Between retrieval and ranking, a real cascade's pre-ranking stage scores a few hundred
candidates per request with a cheap model. This one sees what the ranking stage sees except the
behaviour sequence (no attention): for candidate c of a request with context x,

    score(x, c) = MLP([context(x), candidate features(c) (with item age), mean sequence(x)])

where "mean sequence" is the masked mean of the behaviour sequence's item embeddings, so the
stage knows the user's interests at the cost of one pooling per request (not one per candidate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from models import features
from models.config import ModelConfig
from models.feature_embeddings import CandidateFeatures, ContextEmbedding, ItemIdEmbedding, mlp
from models.retrieval_tower import masked_mean

xf = features.transformed_name


class PreRankingStage(tf.keras.layers.Layer):
    """Scores every candidate of each request: transformed features -> [B, list_size] logits.

    Inputs (transformed, ``models.features``): context features [B, 1], the behaviour sequence
    [B, SEQ_LEN] with its mask, candidate features [B, L]. Widths: ``ModelConfig.embedding_dim``
    per id embedding, ``ModelConfig.prerank_hidden`` hidden layers, one output.
    """

    def __init__(
        self, vocabulary_sizes: Mapping[str, int], config: ModelConfig, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "prerank")
        super().__init__(**kwargs)
        dim = config.embedding_dim
        self.context = ContextEmbedding(vocabulary_sizes, dim, name="context")
        self.candidate = CandidateFeatures(vocabulary_sizes, dim, with_item_age=True, name="item")
        self.sequence_items = ItemIdEmbedding(vocabulary_sizes, dim, name="sequence_items")
        self.head = mlp(tuple(config.prerank_hidden), 1, name="prerank_mlp")

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        candidates = self.candidate(inputs)  # [B, L, F]
        sequence = self.sequence_items(
            inputs[xf("seq_video_id")],
            inputs[xf("seq_author_id")],
            inputs[xf("seq_category_level_two")],
        )  # [B, S, 3 * dim]
        request = tf.concat(
            [self.context(inputs), masked_mean(sequence, inputs[xf(features.SEQ_MASK)])], axis=-1
        )  # [B, C]
        list_size = tf.shape(candidates)[1]
        request = tf.tile(request[:, None, :], tf.stack([1, list_size, 1]))  # [B, L, C]
        return tf.squeeze(self.head(tf.concat([request, candidates], axis=-1)), axis=-1)
