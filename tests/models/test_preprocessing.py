"""preprocessing_fn under tf.Transform's Beam implementation, on a tiny hand-built dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import features, preprocessing

pytestmark = pytest.mark.slow

L, S = 3, 4  # candidates and sequence length of this test's examples
PAD = features.PAD_ID
HOUR_MS = 3_600_000
# 2024-01-03 (a Wednesday) 07:00 UTC.
REQUEST_TS = 1_704_240_000_000 + 7 * HOUR_MS


def _example(video, seq, age=3, upload_hours_before=(2, 0, 0), label=(4.0, 2.0, 0.0)):
    hours = dict(zip(video, upload_hours_before, strict=True))
    upload = [REQUEST_TS - hours[v] * HOUR_MS if v != PAD else 0 for v in video]
    return {
        "request_id": [1],
        "request_timestamp": [REQUEST_TS],
        "user_id": [10],
        "device_id": [20],
        "age": [age],
        "gender": [1],
        "province": [0],
        "seq_video_id": seq,
        "seq_author_id": [0 if v != PAD else PAD for v in seq],
        "seq_category_level_two": [0 if v != PAD else PAD for v in seq],
        "video_id": video,
        "author_id": [0 if v != PAD else PAD for v in video],
        "category_level_one": [0 if v != PAD else PAD for v in video],
        "category_level_two": [0 if v != PAD else PAD for v in video],
        "upload_type": [0 if v != PAD else PAD for v in video],
        "upload_timestamp": upload,
        "duration": [9 if v != PAD else 0 for v in video],
        "stage": [3, 2, PAD],
        "rank_index": [0, 10, PAD],
        "label": list(label),
        "feedback_label": [1.0, 0.0, 0.0],
        "mask": [1 if v != PAD else 0 for v in video],
    }


def _feature_spec():
    spec = {}
    for name in features.CONTEXT_FEATURES:
        spec[name] = tf.io.FixedLenFeature([1], tf.int64)
    for name in features.SEQUENCE_FEATURES:
        spec[name] = tf.io.FixedLenFeature([S], tf.int64)
    for name in (*features.ITEM_FEATURES, "stage", "rank_index", "mask"):
        spec[name] = tf.io.FixedLenFeature([L], tf.int64)
    for name in ("label", "feedback_label"):
        spec[name] = tf.io.FixedLenFeature([L], tf.float32)
    return spec


@pytest.fixture(scope="module")
def transformed(tmp_path_factory) -> dict:
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    tmp = tmp_path_factory.mktemp("tft")
    # video 7: 3 times (twice in a list, once in a sequence); 8: 2 times; 9: once, only in a
    # sequence (the vocabulary is shared with seq_video_id).
    train = [
        _example([7, 8, PAD], [7, 9, PAD, PAD]),
        _example([7, 8, PAD], [PAD] * S),
    ]
    unseen = [_example([7, 555, PAD], [8, 556, PAD, PAD], age=99)]
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_feature_spec())
    )
    with tft_beam.Context(temp_dir=str(tmp / "tmp"), force_tf_compat_v1=False):
        (train_out, _), transform_fn = (
            train,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn)
        unseen_out, _ = ((unseen, metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "transform_fn"))
    return {
        "train": train_out,
        "unseen": unseen_out,
        "output": tft.TFTransformOutput(str(tmp / "transform_fn")),
    }


def xf(name: str) -> str:
    return features.transformed_name(name)


def test_shared_vocabulary_by_frequency_with_a_reserved_pad_index(transformed) -> None:
    first = transformed["train"][0]
    # Index 0 is padding; 1.. the ids by descending frequency: "7" (3), "8" (2), "9" (1).
    np.testing.assert_array_equal(first[xf("video_id")], [1, 2, preprocessing.PAD_INDEX])
    np.testing.assert_array_equal(first[xf("seq_video_id")], [1, 3, 0, 0])
    sizes = preprocessing.vocabulary_sizes(transformed["output"])
    assert sizes["video_id"] == 3 + preprocessing.NUM_OOV_BUCKETS + 1
    assert sizes["user_id"] == 1 + preprocessing.NUM_OOV_BUCKETS + 1
    vocab_file = transformed["output"].vocabulary_file_by_name(
        preprocessing.VOCAB_FILENAMES["video_id"]
    )
    words = Path(vocab_file).read_text().split()
    assert words == ["7", "8", "9"] and str(PAD) not in words


def test_unseen_ids_land_in_oov_buckets(transformed) -> None:
    unseen = transformed["unseen"][0]
    video = unseen[xf("video_id")]
    assert video[0] == 1 and video[2] == preprocessing.PAD_INDEX
    assert 3 < video[1] <= 3 + preprocessing.NUM_OOV_BUCKETS
    seq = unseen[xf("seq_video_id")]
    assert seq[0] == 2 and 3 < seq[1] <= 3 + preprocessing.NUM_OOV_BUCKETS
    assert unseen[xf("age")].tolist() == [features.SMALL_CATEGORICAL_SIZES["age"] - 1]  # clipped


def test_time_features_and_passthrough(transformed) -> None:
    first = transformed["train"][0]
    assert first[xf(features.REQUEST_HOUR)].tolist() == [7.0]
    assert first[xf(features.REQUEST_DAY_OF_WEEK)].tolist() == [2.0]  # Wednesday (Monday = 0)
    np.testing.assert_allclose(first[xf(features.ITEM_AGE)], [math.log1p(2.0), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        first[xf(features.DURATION_LOG)], [math.log1p(9.0), math.log1p(9.0), 0.0], rtol=1e-6
    )
    np.testing.assert_array_equal(first[xf(features.SEQ_MASK)], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(first[xf(features.LABEL)], [4.0, 2.0, 0.0])
    np.testing.assert_array_equal(first[xf(features.MASK)], [1, 1, 0])
    np.testing.assert_array_equal(first[xf(features.STAGE)], [3, 2, PAD])
    assert first[xf("gender")].tolist() == [1]


def test_upload_time_z_score_and_raw_item_passthrough(transformed) -> None:
    first = transformed["train"][0]
    # Train uploads: video 7 two hours before the request, video 8 at it, each twice: mean one
    # hour before, standard deviation one hour, so the z-scores are -1 and +1; padding 0.
    np.testing.assert_allclose(first[xf(features.UPLOAD_TIME)], [-1.0, 1.0, 0.0], atol=1e-3)
    np.testing.assert_array_equal(first[features.raw_passthrough_name("video_id")], [7, 8, PAD])
    upload = first[features.raw_passthrough_name("upload_timestamp")]
    np.testing.assert_array_equal(upload, [REQUEST_TS - 2 * HOUR_MS, REQUEST_TS, 0])
