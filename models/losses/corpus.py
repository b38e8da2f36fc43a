"""Retrieval against the whole corpus: a sampled softmax over the batch's items, logQ-corrected.

The cascade losses only rank the 40 candidates an earlier production cascade logged, so the
retrieval tower never learns to push down the rest of the corpus (sample selection bias), while
at serving time it ranks every item. This term adds the corpus: each request's ground-truth
items must beat items sampled from the corpus, here the items of the other requests of the batch
(in-batch negatives, Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019; TFRS ``tasks.Retrieval``).

In-batch items are not uniform over the corpus: an item appears as often as the log holds it
(popular items far more often). The logQ correction subtracts the log of each item's sampling
probability ``Q(j)`` from its logit, so the sampled softmax estimates the full softmax over the
corpus rather than over the log's distribution:

    s(b, j)   = <q_b, c_j> / temperature - log Q(j)
    L(b, p)   = -log( exp s(b, p) / (exp s(b, p) + sum_{j in S, id(j) not in P_b} exp s(b, j)) )
    L_corpus  = mean over the positives p of every request b of L(b, p)

``S`` is the batch's sampled slots (only the positives: TFRS's in-batch softmax, or every valid
logged candidate: ``LossConfig.corpus_negatives``), ``P_b`` request b's positives: a slot holding
one of b's own positive items is never one of b's negatives (TFRS ``remove_accidental_hits``,
extended to several positives per request). With one positive per request and the positives as
samples this is exactly ``tfrs.tasks.Retrieval(candidate_sampling_probability=Q,
remove_accidental_hits=True)``'s loss (summed there, averaged here).
"""

from __future__ import annotations

import tensorflow as tf

# Logit of an excluded slot: finite so an empty negative set keeps finite gradients.
_EXCLUDED = -1e9


def corpus_softmax_loss(
    query: tf.Tensor,
    candidates: tf.Tensor,
    item_ids: tf.Tensor,
    positives: tf.Tensor,
    samples: tf.Tensor,
    log_q: tf.Tensor | None = None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Sampled softmax of each request's positives against the batch's items (module docstring).

    Args:
      query: [B, D] query embeddings.
      candidates: [B, L] x D: the embedding of every slot of every request, [B, L, D].
      item_ids: [B, L] int item ids of the slots (equal ids = one item, with one embedding and
        one sampling probability: the candidate tower sees only item features).
      positives: [B, L] 0/1: the request's positive items (e.g. its ground truth).
      samples: [B, L] 0/1: slots used as sampled items (e.g. every valid logged candidate).
      log_q: [B, L] log sampling probability of each slot's item, or None (no correction).
      temperature: scores are <q, c> / temperature.

    Returns:
      Scalar: the mean of L(b, p) over every positive slot; 0 if the batch has none.
    """
    query = tf.cast(query, tf.float32)
    candidates = tf.cast(candidates, tf.float32)
    positives = tf.cast(positives, tf.float32)
    samples = tf.cast(samples, tf.float32)
    batch = tf.shape(candidates)[0]
    dim = tf.shape(candidates)[-1]
    correction = tf.zeros_like(positives) if log_q is None else tf.cast(log_q, tf.float32)
    # own[b, l]: request b's corrected logit for its own slot l (its positives' logits).
    own = tf.einsum("bd,bld->bl", query, candidates) / temperature - correction

    # The sampled slots, one column per distinct sampled item of the batch: an item sampled n
    # times contributes n * exp(s), i.e. its logit + log n (the same sum as one column per
    # slot, on a [B, distinct sampled items] matrix instead of [B, B * L]).
    flat_ids = tf.reshape(tf.cast(item_ids, tf.int64), [-1])
    unique_ids, slot_to_unique = tf.unique(flat_ids)
    distinct = tf.size(unique_ids)
    times_sampled = tf.math.unsorted_segment_sum(
        tf.reshape(samples, [-1]), slot_to_unique, distinct
    )  # [U]
    first_slot = tf.math.unsorted_segment_min(tf.range(tf.size(flat_ids)), slot_to_unique, distinct)
    columns = tf.reshape(tf.where(times_sampled > 0), [-1])  # [S] unique index of each column
    column_slot = tf.gather(first_slot, columns)
    embeddings = tf.gather(tf.reshape(candidates, [-1, dim]), column_slot)  # [S, D]
    logits = tf.matmul(query, embeddings, transpose_b=True) / temperature  # [B, S]
    logits += tf.math.log(tf.gather(times_sampled, columns))
    logits -= tf.gather(tf.reshape(correction, [-1]), column_slot)

    # is_own_positive[b, c]: column c's item is one of request b's positives.
    column_of_unique = tf.tensor_scatter_nd_update(
        tf.fill([distinct], tf.constant(-1, tf.int64)),
        columns[:, None],
        tf.range(tf.size(columns, out_type=tf.int64)),
    )
    slot_column = tf.gather(column_of_unique, slot_to_unique)  # [B * L], -1: not sampled
    rows = tf.repeat(tf.range(batch, dtype=tf.int64), tf.shape(positives)[1])
    hit = tf.logical_and(tf.reshape(positives, [-1]) > 0, slot_column >= 0)
    is_own_positive = (
        tf.scatter_nd(
            tf.boolean_mask(tf.stack([rows, slot_column], axis=1), hit),
            tf.ones_like(tf.boolean_mask(slot_column, hit), tf.float32),
            tf.stack([tf.cast(batch, tf.int64), tf.size(columns, out_type=tf.int64)]),
        )
        > 0
    )
    negative = tf.logical_not(is_own_positive)
    negative_lse = tf.reduce_logsumexp(tf.where(negative, logits, _EXCLUDED), axis=1)  # [B]
    # -log(e^x / (e^x + e^N)) = softplus(N - x), per positive slot.
    per_positive = tf.nn.softplus(negative_lse[:, None] - own)
    return tf.math.divide_no_nan(tf.reduce_sum(per_positive * positives), tf.reduce_sum(positives))
