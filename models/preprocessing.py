"""TFX Transform ``preprocessing_fn``: id vocabularies, time features, label passthrough.

Shared by both stages and by serving (through the Transform graph, so training and serving
compute identical features). Outputs are named ``features.transformed_name(name)``:

- Vocabulary indices (int64, the raw feature's shape) for every feature of
  ``features.VOCABULARIES``; features of one vocabulary (``video_id`` and ``seq_video_id``...)
  share one vocabulary file and one index space, so they can share an embedding table. Ids are
  stringified before lookup. Index layout of a vocabulary of V ids::

      0                    PAD_INDEX: padding (PAD_ID, -1); never in a vocabulary
      1 .. V               the ids seen in the analyzed (train) split, most frequent first
      V+1 .. V+NUM_OOV     out-of-vocabulary buckets (hash of the id): new users and items

  so an embedding table needs ``V + NUM_OOV_BUCKETS + 1`` rows (``vocabulary_sizes``).
- Small categoricals (``features.SMALL_CATEGORICAL_SIZES``): clipped to ``[0, size)``, int64.
- Time features (float32): ``REQUEST_HOUR`` (0-23, UTC) and ``REQUEST_DAY_OF_WEEK`` (0 =
  Monday) of the request, shape [1]; ``ITEM_AGE`` = log1p(hours from upload to request, >= 0)
  and ``DURATION_LOG`` = log1p(seconds), shape [list_size], 0 for padding.
- ``UPLOAD_TIME`` (float32 [list_size]): the upload time as a z-score over the analyzed split
  (0 for padding); absolute, unlike ``ITEM_AGE``, so a candidate embedding can be precomputed.
- ``SEQ_MASK`` (float32 [SEQ_LEN]): 1 where the behaviour sequence has an item.
- Raw item features (``features.raw_passthrough_name``): the logged ids and times, int64, so the
  Trainer can build the item table that the exported stages look candidates up in.
- Passthrough when present: ``label``, ``feedback_label`` (float32), ``mask``, ``stage``,
  ``rank_index`` (int64). They are optional: at serving time the raw batch holds only
  request-time features and the function (and Transform's saved graph) computes only what
  those allow.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from models import features

NUM_OOV_BUCKETS = 10
PAD_INDEX = 0  # index of padding in every vocabulary-indexed feature
# tft vocabulary file per vocabulary (TFTransformOutput.vocabulary_file_by_name(...)).
VOCAB_FILENAMES: dict[str, str] = {name: f"vocab_{name}" for name in features.VOCABULARIES}
PASSTHROUGH: tuple[str, ...] = (
    features.LABEL,
    features.FEEDBACK_LABEL,
    features.MASK,
    features.STAGE,
    features.RANK_INDEX,
)
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def _non_pad_values(x: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(x, [-1])
    return tf.boolean_mask(flat, tf.not_equal(flat, features.PAD_ID))


def _dense(x: Any) -> tf.Tensor:
    """FixedLenFeature inputs are dense already; a SparseTensor (VarLen) is densified."""
    if isinstance(x, tf.SparseTensor):
        return tf.sparse.to_dense(x, default_value=features.PAD_ID)
    return x


def _vocabulary_features(inputs: dict[str, Any]) -> dict[str, tf.Tensor]:
    import tensorflow_transform as tft

    outputs = {}
    for vocab, names in features.VOCABULARIES.items():
        present = [n for n in names if n in inputs]
        if not present:
            continue
        raw = {n: _dense(inputs[n]) for n in present}
        ids = tf.concat([_non_pad_values(raw[n]) for n in present], axis=0)
        vocab_path = tft.vocabulary(
            tf.strings.as_string(ids), vocab_filename=VOCAB_FILENAMES[vocab]
        )
        for name in present:
            index = tft.apply_vocabulary(
                tf.strings.as_string(raw[name]), vocab_path, num_oov_buckets=NUM_OOV_BUCKETS
            )
            outputs[features.transformed_name(name)] = tf.where(
                tf.equal(raw[name], features.PAD_ID),
                tf.constant(PAD_INDEX, tf.int64),
                index + 1,
            )
    return outputs


def _time_features(inputs: dict[str, Any]) -> dict[str, tf.Tensor]:
    outputs = {}
    if "request_timestamp" in inputs:
        ts = _dense(inputs["request_timestamp"])
        hour = tf.math.floormod(tf.math.floordiv(ts, _MS_PER_HOUR), 24)
        weekday = tf.math.floormod(tf.math.floordiv(ts, _MS_PER_DAY) + _EPOCH_WEEKDAY, 7)
        outputs[features.transformed_name(features.REQUEST_HOUR)] = tf.cast(hour, tf.float32)
        outputs[features.transformed_name(features.REQUEST_DAY_OF_WEEK)] = tf.cast(
            weekday, tf.float32
        )
        if "upload_timestamp" in inputs:
            upload = _dense(inputs["upload_timestamp"])
            hours = tf.cast(ts - upload, tf.float32) / _MS_PER_HOUR  # [batch, 1] - [batch, L]
            age = tf.math.log1p(tf.maximum(hours, 0.0))
            # Padding (upload time 0) gets 0, not the age of the epoch.
            outputs[features.transformed_name(features.ITEM_AGE)] = tf.where(
                upload > 0, age, tf.zeros_like(age)
            )
    if "upload_timestamp" in inputs:
        outputs[features.transformed_name(features.UPLOAD_TIME)] = _upload_time_z(
            _dense(inputs["upload_timestamp"])
        )
    if "duration" in inputs:
        seconds = tf.cast(_dense(inputs["duration"]), tf.float32)
        outputs[features.transformed_name(features.DURATION_LOG)] = tf.math.log1p(
            tf.maximum(seconds, 0.0)
        )
    return outputs


def _upload_time_z(upload: tf.Tensor) -> tf.Tensor:
    """Upload time (ms) as a z-score of days over the analyzed split; padding (0) gets 0."""
    import tensorflow_transform as tft

    valid = upload > 0
    # float64 first: milliseconds since the epoch do not fit float32's mantissa.
    days = tf.cast(tf.cast(upload, tf.float64) / _MS_PER_DAY, tf.float32)
    observed = tf.boolean_mask(days, valid)
    mean = tft.mean(observed)
    std = tf.sqrt(tft.var(observed))
    z = (days - mean) / tf.maximum(std, 1e-3)
    return tf.where(valid, z, tf.zeros_like(z))


def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, tf.Tensor]:
    """Transform's entry point: raw list-wise features -> model features (see module doc)."""
    outputs = _vocabulary_features(inputs)
    for name, size in features.SMALL_CATEGORICAL_SIZES.items():
        if name in inputs:
            outputs[features.transformed_name(name)] = tf.clip_by_value(
                tf.cast(_dense(inputs[name]), tf.int64), 0, size - 1
            )
    outputs.update(_time_features(inputs))
    if "seq_video_id" in inputs:
        seq = _dense(inputs["seq_video_id"])
        outputs[features.transformed_name(features.SEQ_MASK)] = tf.cast(
            tf.not_equal(seq, features.PAD_ID), tf.float32
        )
    for name in PASSTHROUGH:
        if name in inputs:
            outputs[features.transformed_name(name)] = _dense(inputs[name])
    for name in features.ITEM_FEATURES:
        if name in inputs:
            outputs[features.raw_passthrough_name(name)] = _dense(inputs[name])
    return outputs


def vocabulary_sizes(tf_transform_output: Any) -> dict[str, int]:
    """Embedding table size per vocabulary: ids seen + NUM_OOV_BUCKETS + 1 (padding).

    Args:
      tf_transform_output: a ``tft.TFTransformOutput`` of a Transform run with this module.
    """
    return {
        name: tf_transform_output.vocabulary_size_by_name(filename) + NUM_OOV_BUCKETS + 1
        for name, filename in VOCAB_FILENAMES.items()
    }
