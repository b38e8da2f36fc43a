"""Feature names and shapes: the one place every stage, component and test reads them from.

Three layers of names, from the logs to the models:

1. ``LOG_COLUMNS``: RecFlow's row schema (one row per request x video), as written by the
   simulator and as read by the ingestion from a user's RecFlow download.
2. The list-wise raw example (one ``tf.Example`` per request), written by the ingestion
   ExampleGen: context features of length 1 (the behaviour sequence of length ``SEQ_LEN``) and
   candidate features of length ``list_size`` (default 40 = 10 per stage group), padded with
   ``PAD_ID`` / 0.0 and flagged by ``MASK``.
3. The transformed features (Transform's output, ``transformed_name(name)``): vocabulary indices
   with out-of-vocabulary buckets, time features, and the label/mask passed through.

Serving: each stage parses only the request-time features named in ``RETRIEVAL_QUERY_FEATURES``,
``ITEM_FEATURES`` and ``RANKING_CONTEXT_FEATURES``; post-exposure feedback and stage flags are
never serving inputs (they would leak the label).
"""

from __future__ import annotations

from typing import Final

# --- 1. RecFlow log rows ---------------------------------------------------------------------

# Column name -> logical type ("int", "float", "int_list"). Order is RecFlow's.
LOG_COLUMNS: Final[dict[str, str]] = {
    "request_id": "int",
    "request_timestamp": "int",  # milliseconds since the epoch
    "user_id": "int",
    "device_id": "int",
    "age": "int",
    "gender": "int",
    "province": "int",
    "video_id": "int",
    "author_id": "int",
    "category_level_one": "int",
    "category_level_two": "int",
    "upload_type": "int",
    "upload_timestamp": "int",  # milliseconds since the epoch
    "duration": "int",  # seconds
    "realshow": "int",
    "rerank_pos": "int",
    "rerank_neg": "int",
    "rank_pos": "int",
    "rank_neg": "int",
    "coarse_neg": "int",
    "prerank_neg": "int",
    "rank_index": "int",
    "rerank_index": "int",
    "playing_time": "float",
    "effective_view": "int",
    "long_view": "int",
    "like": "int",
    "follow": "int",
    "forward": "int",
    "comment": "int",
    # The user's last SEQ_LEN effective views before the request, most recent first.
    "seq_video_id": "int_list",
    "seq_author_id": "int_list",
    "seq_category_level_two": "int_list",
}

# 0/1 flags that say which stage dropped (or passed) a candidate.
STAGE_FLAG_COLUMNS: Final[tuple[str, ...]] = (
    "realshow",
    "rerank_pos",
    "rerank_neg",
    "rank_pos",
    "rank_neg",
    "coarse_neg",
    "prerank_neg",
)
# Feedback known only after exposure: never a model input, only a label.
FEEDBACK_COLUMNS: Final[tuple[str, ...]] = (
    "playing_time",
    "effective_view",
    "long_view",
    "like",
    "follow",
    "forward",
    "comment",
)

# Stage groups of the list-wise example, best to worst (the paper's label order:
# rank_pos > rank_neg > coarse_neg > prerank_neg). Values are the ``stage`` feature codes.
STAGE_CODES: Final[dict[str, int]] = {
    "prerank_neg": 0,
    "coarse_neg": 1,
    "rank_neg": 2,
    "rank_pos": 3,
}
GROUP_SIZE: Final[int] = 10  # candidates kept per stage group (the paper's setting)
LIST_SIZE: Final[int] = GROUP_SIZE * len(STAGE_CODES)  # 40; configurable, never assumed
SEQ_LEN: Final[int] = 50
PAD_ID: Final[int] = -1  # padding of id lists (candidates and behaviour sequence)

# --- 2. List-wise raw example (ingestion output) ---------------------------------------------

# Context features, int64, shape [1].
CONTEXT_FEATURES: Final[tuple[str, ...]] = (
    "request_id",
    "request_timestamp",
    "user_id",
    "device_id",
    "age",
    "gender",
    "province",
)
# Behaviour sequence, int64, shape [SEQ_LEN], padded with PAD_ID.
SEQUENCE_FEATURES: Final[tuple[str, ...]] = (
    "seq_video_id",
    "seq_author_id",
    "seq_category_level_two",
)
# Per-candidate item features, int64, shape [list_size], padded with PAD_ID (0 for times).
ITEM_FEATURES: Final[tuple[str, ...]] = (
    "video_id",
    "author_id",
    "category_level_one",
    "category_level_two",
    "upload_type",
    "upload_timestamp",
    "duration",
)
STAGE: Final[str] = "stage"  # int64 [list_size]: STAGE_CODES value, PAD_ID for padding
RANK_INDEX: Final[str] = "rank_index"  # int64 [list_size]: ranking position, PAD_ID if none
LABEL: Final[str] = "label"  # float32 [list_size]: graded ground truth (see below), 0 for pad
FEEDBACK_LABEL: Final[str] = "feedback_label"  # float32 [list_size]: effective_view if exposed
MASK: Final[str] = "mask"  # int64 [list_size]: 1 for a real candidate, 0 for padding

# The paper's graded label: stage groups in order, rank_pos items ordered by rank_index:
#   prerank_neg 0, coarse_neg 1, rank_neg 2, rank_pos 3 + (GROUP_SIZE - rank_index) / GROUP_SIZE
# so the gt_num items with the largest labels are the ranking stage's top items, best first.

# --- 3. Transformed features (Transform output, model input) ---------------------------------


def transformed_name(name: str) -> str:
    """Name of a feature after Transform (TFX convention: ``_xf`` suffix)."""
    return f"{name}_xf"


# Vocabularies: vocabulary name -> raw features indexed with it (shared embedding tables).
# Ids are stringified before vocabulary lookup; unseen ids land in OOV buckets.
VOCABULARIES: Final[dict[str, tuple[str, ...]]] = {
    "user_id": ("user_id",),
    "device_id": ("device_id",),
    "province": ("province",),
    "video_id": ("video_id", "seq_video_id"),
    "author_id": ("author_id", "seq_author_id"),
    "category_level_one": ("category_level_one",),
    "category_level_two": ("category_level_two", "seq_category_level_two"),
    "upload_type": ("upload_type",),
}
# Small categorical features used as-is (clipped to [0, size)), no vocabulary.
SMALL_CATEGORICAL_SIZES: Final[dict[str, int]] = {"age": 16, "gender": 4}

# Derived time features (float32): hour of day and day of week of the request (context,
# shape [1]); log1p of item age in hours at request time and log1p duration (shape [list_size]).
REQUEST_HOUR: Final[str] = "request_hour"
REQUEST_DAY_OF_WEEK: Final[str] = "request_day_of_week"
ITEM_AGE: Final[str] = "item_age_log_hours"
DURATION_LOG: Final[str] = "duration_log"
# Upload time of an item as a z-score over the analyzed split (float32 [list_size], 0 for
# padding): absolute, so the retrieval candidate tower's embedding does not depend on the request.
UPLOAD_TIME: Final[str] = "upload_time_z"
SEQ_MASK: Final[str] = "seq_mask"  # float32 [SEQ_LEN]: 1 where the sequence has an item


def raw_passthrough_name(name: str) -> str:
    """Transform output carrying the raw (untransformed) value of an item feature.

    The Trainer builds the item table "known at training time" (retrieval's top-K corpus and
    ranking's item lookup) from these columns of the transformed examples.
    """
    return transformed_name(f"raw_{name}")


# --- Serving inputs per stage (request-time features only) -----------------------------------

# What the query tower (and the ranking model's context) may see at request time.
RETRIEVAL_QUERY_FEATURES: Final[tuple[str, ...]] = (
    "request_timestamp",
    "user_id",
    "device_id",
    "age",
    "gender",
    "province",
    *SEQUENCE_FEATURES,
)
RANKING_CONTEXT_FEATURES: Final[tuple[str, ...]] = RETRIEVAL_QUERY_FEATURES
# Never serving inputs.
LEAKY_FEATURES: Final[tuple[str, ...]] = (
    *STAGE_FLAG_COLUMNS,
    *FEEDBACK_COLUMNS,
    STAGE,
    RANK_INDEX,
    LABEL,
    FEEDBACK_LABEL,
    "rerank_index",
)
