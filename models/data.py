"""Training input: transformed list-wise examples -> batches of feature dicts; the item table.

The Trainer reads Transform's output (GZIP TFRecords of transformed tf.Examples, one per
request). ``item_corpus`` collects, from the same files, the raw features of every item seen in
training: the "corpus known at training time" of retrieval's top-K index and of ranking's item
lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from models import features


def _gzip_reader(filenames: tf.Tensor) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(filenames, compression_type="GZIP")


def input_fn(
    file_pattern: str | Sequence[str],
    tf_transform_output: Any,
    batch_size: int,
    *,
    shuffle: bool,
    repeat: bool,
    seed: int = 0,
    shuffle_buffer: int = 4096,
) -> tf.data.Dataset:
    """Batches of transformed features: {transformed name: [batch, ...] tensor}.

    Args:
      file_pattern: Transform's output files (``FnArgs.train_files`` / ``eval_files``).
      tf_transform_output: the ``tft.TFTransformOutput`` of the Transform run.
      batch_size: requests per batch.
      shuffle / repeat: shuffle requests (seeded) and repeat indefinitely (training).
    """
    dataset = tf.data.experimental.make_batched_features_dataset(
        file_pattern=list(file_pattern) if not isinstance(file_pattern, str) else file_pattern,
        batch_size=batch_size,
        features=tf_transform_output.transformed_feature_spec(),
        reader=_gzip_reader,
        num_epochs=None if repeat else 1,
        shuffle=shuffle,
        shuffle_buffer_size=shuffle_buffer,
        shuffle_seed=seed,
        drop_final_batch=False,
    )
    # Multi-worker strategies shard the input per worker. By file (the default) fails when
    # Transform wrote fewer files than there are workers; by element works for any file count.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def list_size(tf_transform_output: Any) -> int:
    """Candidates per request in the transformed examples (from the mask's fixed shape)."""
    spec = tf_transform_output.transformed_feature_spec()[features.transformed_name(features.MASK)]
    return int(spec.shape[0])


@dataclasses.dataclass(frozen=True)
class ItemCorpus:
    """Raw features of the items known at training time, one row per item (int64 columns of
    ``features.ITEM_FEATURES``); ``video_id`` is unique and sorted."""

    columns: dict[str, np.ndarray]

    @property
    def video_ids(self) -> np.ndarray:
        return self.columns["video_id"]

    def __len__(self) -> int:
        return len(self.video_ids)


def item_corpus(
    file_pattern: str | Sequence[str], tf_transform_output: Any, batch_size: int = 1024
) -> ItemCorpus:
    """Every item of the given transformed examples with its raw features.

    An item logged more than once keeps the features of its last occurrence in file order
    (item features do not change in RecFlow; the last one wins if a log disagrees).
    """
    raw = {name: features.raw_passthrough_name(name) for name in features.ITEM_FEATURES}
    mask_name = features.transformed_name(features.MASK)
    dataset = input_fn(
        file_pattern, tf_transform_output, batch_size, shuffle=False, repeat=False
    ).map(lambda batch: {k: batch[k] for k in [*raw.values(), mask_name]})
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in raw}
    for batch in dataset.as_numpy_iterator():
        valid = batch[mask_name].astype(bool) & (batch[raw["video_id"]] != features.PAD_ID)
        for name, column in raw.items():
            chunks[name].append(batch[column][valid])
    columns = {name: np.concatenate(parts).astype(np.int64) for name, parts in chunks.items()}
    if not len(columns["video_id"]):
        raise ValueError("item_corpus: the training examples hold no candidate")
    # np.unique keeps the first occurrence: reverse so the last logged features win.
    reversed_ids = columns["video_id"][::-1]
    ids, first = np.unique(reversed_ids, return_index=True)
    return ItemCorpus({name: column[::-1][first] for name, column in columns.items()})


def item_sampling_log_q(
    file_pattern: str | Sequence[str],
    tf_transform_output: Any,
    vocabulary_size: int,
    *,
    positives_only: bool = False,
    gt_num: int = 10,
    batch_size: int = 1024,
) -> np.ndarray:
    """log Q(item) of the retrieval corpus term (``models.losses.corpus``), per item index.

    Q(item) is the item's share of the slots the term samples from in the training data: every
    valid logged candidate, or with ``positives_only`` every ground-truth candidate (the
    ``gt_num`` largest labels of each request, as ``losses.ground_truth_indicator`` selects).
    Items never sampled (out-of-vocabulary buckets, padding) count as sampled once.

    Args:
      file_pattern: transformed training examples.
      tf_transform_output: the Transform run's ``TFTransformOutput``.
      vocabulary_size: rows of the video id vocabulary (``preprocessing.vocabulary_sizes``).

    Returns:
      float32 [vocabulary_size], indexed by the transformed ``video_id``.
    """
    video = features.transformed_name("video_id")
    names = [
        video,
        features.transformed_name(features.MASK),
        features.transformed_name(features.LABEL),
    ]
    dataset = input_fn(
        file_pattern, tf_transform_output, batch_size, shuffle=False, repeat=False
    ).map(lambda batch: {k: batch[k] for k in names})
    counts = np.zeros(vocabulary_size, np.float64)
    for batch in dataset.as_numpy_iterator():
        ids, mask, labels = (batch[n] for n in names)
        valid = mask.astype(bool)
        if positives_only:
            ranked = np.where(valid, labels, -np.inf)
            # Ties: the lower position first, as tf.math.top_k (stable sort of -label).
            order = np.argsort(-ranked, axis=1, kind="stable")[:, :gt_num]
            chosen = np.zeros_like(valid)
            np.put_along_axis(chosen, order, True, axis=1)
            valid &= chosen
        np.add.at(counts, ids[valid], 1.0)
    if counts.sum() == 0:
        raise ValueError("item_sampling_log_q: the training examples hold no candidate")
    return np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)
