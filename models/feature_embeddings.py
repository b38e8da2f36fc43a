"""Embeddings of the transformed features, shared in structure by both stages.

Each stage owns its own instances (the stages are separate networks, trained jointly): the
layers here only say how a stage turns Transform's outputs into vectors.

Index layout (``models.preprocessing``): 0 is padding, 1..V the vocabulary, then the
out-of-vocabulary buckets; a table of ``vocabulary_sizes[name]`` rows covers all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from models import features

xf = features.transformed_name

HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7


def _ids(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.int64)


class ContextEmbedding(tf.keras.layers.Layer):
    """User and request context -> [batch, 7 * dim].

    Inputs (transformed, each [batch, 1]): ``user_id``, ``device_id``, ``province``, ``age``,
    ``gender`` indices and ``request_hour`` / ``request_day_of_week`` (floats holding small
    integers, embedded as categories).
    """

    ID_FEATURES = ("user_id", "device_id", "province")

    def __init__(self, vocabulary_sizes: Mapping[str, int], dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary_sizes = dict(vocabulary_sizes)
        self.dim = dim
        sizes = {name: self.vocabulary_sizes[name] for name in self.ID_FEATURES}
        sizes.update(features.SMALL_CATEGORICAL_SIZES)
        sizes[features.REQUEST_HOUR] = HOURS_PER_DAY
        sizes[features.REQUEST_DAY_OF_WEEK] = DAYS_PER_WEEK
        self.tables = {
            name: tf.keras.layers.Embedding(rows, dim, name=f"{name}_embedding")
            for name, rows in sizes.items()
        }

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = [
            table(_ids(tf.reshape(inputs[xf(name)], [-1]))) for name, table in self.tables.items()
        ]
        return tf.concat(parts, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_sizes": self.vocabulary_sizes,
            "dim": self.dim,
        }


class ItemIdEmbedding(tf.keras.layers.Layer):
    """Video, author and second-level category ids -> [..., 3 * dim] (padding -> zeros).

    The ids a behaviour sequence and a candidate have in common, so one layer embeds both
    (the sequence's items and the candidates live in one space).
    """

    FEATURES = ("video_id", "author_id", "category_level_two")

    def __init__(self, vocabulary_sizes: Mapping[str, int], dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary_sizes = dict(vocabulary_sizes)
        self.dim = dim
        self.tables = {
            name: tf.keras.layers.Embedding(
                self.vocabulary_sizes[name], dim, name=f"{name}_embedding"
            )
            for name in self.FEATURES
        }

    def call(self, video: tf.Tensor, author: tf.Tensor, category: tf.Tensor) -> tf.Tensor:
        ids = [_ids(video), _ids(author), _ids(category)]
        parts = [self.tables[name](i) for name, i in zip(self.FEATURES, ids, strict=True)]
        not_pad = tf.cast(tf.not_equal(ids[0], 0), tf.float32)[..., None]
        return tf.concat(parts, axis=-1) * not_pad

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_sizes": self.vocabulary_sizes,
            "dim": self.dim,
        }


class CandidateFeatures(tf.keras.layers.Layer):
    """A candidate's features -> [..., 5 * dim + number of dense features].

    The first ``item_ids_width`` columns are ``item_ids`` (video, author, second category), the
    embedding a behaviour sequence's items get from the same layer.

    Ids (video, author, both categories, upload type) are embedded; the dense features are
    ``duration_log`` and ``upload_time_z`` (request-independent), plus ``item_age_log_hours``
    when ``with_item_age`` (request-dependent, so not for a precomputable candidate tower).
    """

    def __init__(
        self,
        vocabulary_sizes: Mapping[str, int],
        dim: int,
        with_item_age: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocabulary_sizes = dict(vocabulary_sizes)
        self.dim = dim
        self.with_item_age = with_item_age
        self.item_ids = ItemIdEmbedding(vocabulary_sizes, dim, name="item_ids")
        self.item_ids_width = len(ItemIdEmbedding.FEATURES) * dim
        self.tables = {
            name: tf.keras.layers.Embedding(
                self.vocabulary_sizes[name], dim, name=f"{name}_embedding"
            )
            for name in ("category_level_one", "upload_type")
        }
        self.dense_features = [features.DURATION_LOG, features.UPLOAD_TIME]
        if with_item_age:
            self.dense_features.append(features.ITEM_AGE)

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = [
            self.item_ids(
                inputs[xf("video_id")],
                inputs[xf("author_id")],
                inputs[xf("category_level_two")],
            )
        ]
        parts += [table(_ids(inputs[xf(name)])) for name, table in self.tables.items()]
        parts += [tf.cast(inputs[xf(name)], tf.float32)[..., None] for name in self.dense_features]
        return tf.concat(parts, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_sizes": self.vocabulary_sizes,
            "dim": self.dim,
            "with_item_age": self.with_item_age,
        }


def mlp(widths: tuple[int, ...], output: int | None, name: str) -> tf.keras.Sequential:
    """ReLU layers of ``widths``, then a linear layer of ``output`` units (if given)."""
    layers = [tf.keras.layers.Dense(w, activation="relu") for w in widths]
    if output is not None:
        layers.append(tf.keras.layers.Dense(output))
    return tf.keras.Sequential(layers, name=name)
