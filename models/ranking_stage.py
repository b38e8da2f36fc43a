"""Stage 2, ranking: a per-candidate model with target attention over the behaviour sequence.

As the paper's DIN ranking stage: each candidate attends over the user's behaviour sequence
(Zhou et al., KDD 2018, "Deep Interest Network"), and an MLP scores

    [context, candidate features (with item age), attended interest, candidate * interest]

The attention weight of sequence item s for candidate c is a softmax over the valid positions of
<W_q e_c, W_k e_s> / sqrt(attention_dim): a bilinear form of the candidate/behaviour pair,
cheaper than DIN's per-pair MLP, whose [batch, list, seq, 4 * dim] input does not fit a CPU
batch of 1024 x 40 x 50.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from models import features
from models.config import ModelConfig
from models.feature_embeddings import CandidateFeatures, ContextEmbedding, mlp

xf = features.transformed_name


class TargetAttention(tf.keras.layers.Layer):
    """Candidates [B, L, E] attend over a sequence [B, S, E] with mask [B, S] -> [B, L, E].

    Masked sequence positions get no weight; a request with an empty sequence gets zeros.
    """

    def __init__(self, attention_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attention_dim = attention_dim
        self.query = tf.keras.layers.Dense(attention_dim, use_bias=False, name="query")
        self.key = tf.keras.layers.Dense(attention_dim, use_bias=False, name="key")

    def call(self, candidates: tf.Tensor, sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        logits = tf.einsum("bla,bsa->bls", self.query(candidates), self.key(sequence))
        logits /= tf.sqrt(float(self.attention_dim))
        valid = tf.cast(mask, tf.bool)[:, None, :]  # [B, 1, S]
        logits = tf.where(valid, logits, tf.fill(tf.shape(logits), -1e9))
        weights = tf.nn.softmax(logits, axis=-1) * tf.cast(valid, logits.dtype)
        return tf.einsum("bls,bse->ble", weights, sequence)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "attention_dim": self.attention_dim}


class RankingStage(tf.keras.layers.Layer):
    """Scores every candidate of each request: transformed features -> [B, list_size] logits."""

    def __init__(
        self, vocabulary_sizes: Mapping[str, int], config: ModelConfig, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "ranking")
        super().__init__(**kwargs)
        dim = config.embedding_dim
        self.context = ContextEmbedding(vocabulary_sizes, dim, name="context")
        self.candidate = CandidateFeatures(vocabulary_sizes, dim, with_item_age=True, name="item")
        self.attention = TargetAttention(config.attention_dim, name="target_attention")
        self.head = mlp(config.ranking_hidden, 1, name="ranking_mlp")

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        candidates = self.candidate(inputs)  # [B, L, F]
        # Its leading columns embed the ids a sequence item has too: one table for both, so
        # the attention compares a candidate with past items in one space.
        candidate_ids = candidates[..., : self.candidate.item_ids_width]  # [B, L, 3 * dim]
        sequence = self.candidate.item_ids(
            inputs[xf("seq_video_id")],
            inputs[xf("seq_author_id")],
            inputs[xf("seq_category_level_two")],
        )  # [B, S, 3 * dim]
        interest = self.attention(candidate_ids, sequence, inputs[xf(features.SEQ_MASK)])
        context = self.context(inputs)  # [B, C]
        list_size = tf.shape(candidates)[1]
        context = tf.tile(context[:, None, :], tf.stack([1, list_size, 1]))
        x = tf.concat([context, candidates, interest, candidate_ids * interest], axis=-1)
        return tf.squeeze(self.head(x), axis=-1)
