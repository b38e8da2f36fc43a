"""Retrieval's approximate top-K index: a ScaNN partition tree over the candidate embeddings.

TFRS's ``factorized_top_k.ScaNN`` always scores the searched partitions with anisotropic
hashing (4-bit codes per block of dimensions). On our retrieval embeddings (16 dimensions,
maximum inner product) that scoring is the weak link: the items a dot product ranks first are
the large-norm ones at the tails of each dimension, which 16 centres per dimension pull towards
the middle, so they lose rank before the exact re-scoring can see them (at 1M items, recall@100
stayed at 0.84 with every partition searched and 1,000 re-scored). At tens of dimensions, exact
float32 scoring of the searched partitions costs little more, so it is the default here
(``scoring="exact"``), and hashing + re-scoring stays an option for wide embeddings
(``scoring="quantized"``).

How the corpus is partitioned matters as much. The items a dot product ranks first for a query
are the ones furthest from the corpus' centre along the query's direction: on the rim of the
embedding cloud, where k-means cells (L2, the TFRS layer's) cut them into many pieces. Here the
embeddings are centred (the mean item is subtracted; a query's scores all shift by the same
``q . mean``, which is added back) and partitioned by direction (spherical k-means), so the rim
facing a query falls into few cells (``partitioning="direction"``; at 1M items, 20% of the
partitions searched found 0.99 of the exact top 100 against 0.91 with L2 cells).

The number of partitions searched per query is a query-time setting of the searcher
(``leaves_to_search``); :class:`ScannIndex` fixes it when the export tunes it
(``models.exporter``: the fewest partitions that reach the target recall against brute force).
A batch's queries are searched in ``query_groups`` groups, one ScaNN op each, which
TensorFlow's inter-op threads run at once: a lone ScaNN op searches its queries one after the
other (its own parallel mode only splits batches of hundreds: measured no faster for batches
of up to 8), so a micro-batch of a few queries would otherwise take a few times one query's
search. The searches only read the
searcher, and are declared so (``auto_control_deps_utils.register_read_only_resource_op``):
otherwise the traced function chains every op on the searcher one after the other.

Like every TFRS top-K layer: ``index(candidates, identifiers)`` then ``call(queries)`` ->
(scores [batch, k], identifiers [batch, k]); the searcher is saved in the SavedModel (ScaNN's
``Scann>`` ops, ``serving.custom_ops``).
"""

from __future__ import annotations

import uuid
from typing import Literal

import tensorflow as tf
import tensorflow_recommenders as tfrs
from tensorflow.python.framework import auto_control_deps_utils

# Searching does not change the searcher: without this, tf.function's automatic control
# dependencies order the searches of one batch's query groups one after the other (they share
# the searcher's resource handle), and the saved graph keeps that order.
auto_control_deps_utils.register_read_only_resource_op("Scann>ScannSearchBatched")

SCORINGS: tuple[str, ...] = ("exact", "quantized")
PARTITIONINGS: tuple[str, ...] = ("direction", "l2")


class ScannIndex(tfrs.layers.factorized_top_k.TopK):
    """Top-K by dot product over a ScaNN partition tree.

    Args:
      k: results per query.
      num_leaves: partitions of the candidates (k-means on the embeddings).
      leaves_to_search: partitions searched per query (``set_leaves_to_search`` changes it).
      partitioning: "direction" (centred embeddings, spherical k-means) or "l2" (k-means on the
        embeddings as they are, as TFRS's layer does).
      scoring: "exact" (float32 dot products within the searched partitions) or "quantized"
        (anisotropic hashing with ``dimensions_per_block`` dimensions per 4-bit code, then the
        best ``reordering_candidates`` re-scored exactly).
      dimensions_per_block: see ``scoring`` (quantized only).
      reordering_candidates: see ``scoring`` (quantized only; None: 10 x k).
      training_iterations: k-means iterations of the partitioning.
      query_groups: a batch's queries are split into this many groups, searched concurrently
        (one ScaNN op per group; a batch smaller than this leaves groups empty).
    """

    def __init__(
        self,
        k: int,
        num_leaves: int,
        leaves_to_search: int,
        scoring: Literal["exact", "quantized"] = "exact",
        partitioning: Literal["direction", "l2"] = "direction",
        dimensions_per_block: int = 1,
        reordering_candidates: int | None = None,
        training_iterations: int = 12,
        query_groups: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(k=k, name=name)
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self._num_leaves = int(num_leaves)
        self._leaves_to_search = int(leaves_to_search)
        self._scoring = scoring
        if partitioning not in PARTITIONINGS:
            raise ValueError(f"partitioning must be one of {PARTITIONINGS}, got {partitioning!r}")
        self._partitioning = partitioning
        self._center = None
        self._dimensions_per_block = int(dimensions_per_block)
        self._reordering_candidates = int(reordering_candidates or 10 * k)
        self._training_iterations = int(training_iterations)
        self.set_query_groups(query_groups)
        self._serialized_searcher = None
        self._identifiers = None

    @property
    def k(self) -> int:
        return self._k

    @property
    def num_leaves(self) -> int:
        return self._num_leaves

    @property
    def leaves_to_search(self) -> int:
        return self._leaves_to_search

    def set_leaves_to_search(self, leaves: int) -> None:
        """Partitions searched per query from now on (traced functions are re-traced)."""
        if not 1 <= leaves <= self._num_leaves:
            raise ValueError(f"leaves_to_search must be in 1..{self._num_leaves}, got {leaves}")
        self._leaves_to_search = int(leaves)
        self._reset_tf_function_cache()

    @property
    def query_groups(self) -> int:
        return self._query_groups

    def set_query_groups(self, groups: int) -> None:
        """Groups a batch's queries are split into from now on (traced functions re-traced)."""
        if groups < 1:
            raise ValueError(f"query_groups must be >= 1, got {groups}")
        self._query_groups = int(groups)
        self._reset_tf_function_cache()

    def index(self, candidates: tf.Tensor, identifiers: tf.Tensor | None = None) -> ScannIndex:
        """Builds the searcher over ``candidates`` [N, D] (float32) with ``identifiers`` [N]."""
        from scann.scann_ops.py import scann_ops

        if len(candidates.shape) != 2:
            raise ValueError(f"candidates must be [N, D], got shape {candidates.shape}")
        if identifiers is not None and identifiers.shape[0] != candidates.shape[0]:
            raise ValueError(
                f"{candidates.shape[0]} candidates but {identifiers.shape[0]} identifiers"
            )
        candidates = tf.convert_to_tensor(candidates, tf.float32)
        center = tf.zeros([candidates.shape[1]], tf.float32)
        if self._partitioning == "direction":
            center = tf.reduce_mean(candidates, axis=0)
        self._center = self.add_weight(
            name="center",
            shape=center.shape,
            initializer=tf.keras.initializers.Zeros(),
            trainable=False,
        )
        self._center.assign(center)
        builder = scann_ops.builder(candidates - center, self._k, "dot_product").tree(
            num_leaves=self._num_leaves,
            # The build's own default; each query passes its leaves_to_search explicitly.
            num_leaves_to_search=self._num_leaves,
            training_iterations=self._training_iterations,
            spherical=self._partitioning == "direction",
        )
        if self._scoring == "exact":
            builder = builder.score_brute_force()
        else:
            builder = builder.score_ah(self._dimensions_per_block).reorder(
                self._reordering_candidates
            )
        self._serialized_searcher = builder.build(
            shared_name=f"{self.name}/{uuid.uuid4()}"
        ).serialize_to_module()
        if identifiers is not None:
            self._identifiers = self.add_weight(
                name="identifiers",
                dtype=identifiers.dtype,
                shape=identifiers.shape,
                initializer=tf.keras.initializers.Constant(tf.zeros((), identifiers.dtype)),
                trainable=False,
            )
            self._identifiers.assign(identifiers)
        self._reset_tf_function_cache()
        return self

    def call(self, queries: tf.Tensor, k: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """(scores [batch, k], identifiers [batch, k]) of ``queries`` [batch, D]."""
        from scann.scann_ops.py import scann_ops

        if self._serialized_searcher is None:
            raise ValueError("call index() before querying the index")
        searcher = scann_ops.searcher_from_module(self._serialized_searcher)
        count = tf.shape(queries)[0]
        groups = []
        for group in range(self._query_groups):
            start = count * group // self._query_groups
            end = count * (group + 1) // self._query_groups
            groups.append(
                searcher.search_batched_parallel(  # ScaNN's pool splits batches of hundreds
                    queries[start:end],
                    final_num_neighbors=k or self._k,
                    leaves_to_search=self._leaves_to_search,
                )
            )
        distances, indices = _concat_groups(groups)
        # The searcher scored q . (x - center): add the query's shift back.
        scores = distances + tf.reduce_sum(queries * self._center, axis=1, keepdims=True)
        if self._identifiers is None:
            return scores, indices
        return scores, tf.gather(self._identifiers, indices)

    def is_exact(self) -> bool:
        return False


def _concat_groups(groups: list) -> tuple[tf.Tensor, tf.Tensor]:
    """One batch's (distances, indices) [batch, n] from its query groups' search results.

    A group's width is its queries' longest result (an empty group's is 0); narrower groups are
    padded the way ScaNN pads the short results within one batch (index 0, distance NaN), so
    the answer is the one a single search of the whole batch gives.
    """
    if len(groups) == 1:
        return groups[0].distances, groups[0].indices
    width = tf.reduce_max(tf.stack([tf.shape(g.indices)[1] for g in groups]))
    distances, indices = [], []
    for g in groups:
        pad = [[0, 0], [0, width - tf.shape(g.indices)[1]]]
        distances.append(tf.pad(g.distances, pad, constant_values=float("nan")))
        indices.append(tf.pad(g.indices, pad))
    return tf.concat(distances, axis=0), tf.concat(indices, axis=0)
