"""One request -> one list-wise example: selection, order, labels, padding, late dead letters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from components.recflow_example_gen import listwise, rows
from components.recflow_example_gen.schema import build_schema
from models import features

GROUP = listwise.ListConfig().resolved_group_size


def _chunks(frame, source="f.parquet"):
    table = pa.table({c: pa.array(frame[c].tolist(), from_pandas=False) for c in frame.columns})
    validated = rows.validate_table(table, source, 0, rows.ValidationConfig())
    assert validated.dead_letters == []
    return [chunk for _, chunk in rows.split_by_request(validated)]


def _parse(example: bytes, list_size: int = features.LIST_SIZE) -> dict[str, np.ndarray]:
    spec = listwise.example_feature_spec(list_size)
    return {k: v.numpy() for k, v in tf.io.parse_single_example(example, spec).items()}


def test_graded_label_is_the_papers() -> None:
    # rank_pos: 3 + (10 - rank_index) / 10; the negatives: their stage code.
    assert listwise.graded_label("rank_pos", 0, 10) == 4.0
    assert listwise.graded_label("rank_pos", 9, 10) == pytest.approx(3.1)
    assert listwise.graded_label("rank_pos", 12, 10) == 3.0  # past the group: no bonus
    assert [
        listwise.graded_label(g, -1, 10) for g in ("rank_neg", "coarse_neg", "prerank_neg")
    ] == [
        2.0,
        1.0,
        0.0,
    ]


def test_example_holds_each_group_best_first_shuffled_then_padding(logs) -> None:
    frame = logs.make_log(1)  # 12 rank_pos (written in reverse), 3 rank_neg, 2 coarse, 1 prerank
    result = listwise.build_request(0, _chunks(frame), listwise.ListConfig())
    ex = _parse(result.example)
    real = GROUP + 3 + 2 + 1
    vid = logs.video_id
    # Selected: the GROUP best rank_pos by rank_index, then every member of the other groups.
    selected = (
        [vid(0, "rank_pos", j) for j in range(GROUP)]
        + [vid(0, "rank_neg", j) for j in range(3)]
        + [vid(0, "coarse_neg", j) for j in range(2)]
        + [vid(0, "prerank_neg", 0)]
    )
    # ... in the request's own shuffled order, real candidates first.
    order = listwise.candidate_order(0, selected)
    np.testing.assert_array_equal(ex["video_id"][:real], [selected[i] for i in order])
    assert ex["video_id"][:real].tolist() != selected, "the list is not in group order"
    np.testing.assert_array_equal(ex["mask"], [1] * real + [0] * (40 - real))
    np.testing.assert_array_equal(ex["stage"][real:], features.PAD_ID)
    np.testing.assert_array_equal(ex["label"][real:], 0.0)
    # Every candidate's features travel with it: read them back by video id.
    by_video = {int(v): i for i, v in enumerate(ex["video_id"][:real])}
    for j in range(GROUP):
        i = by_video[vid(0, "rank_pos", j)]
        assert ex["stage"][i] == 3 and ex["rank_index"][i] == j
        assert ex["label"][i] == pytest.approx(3 + (GROUP - j) / GROUP)
        # Exposed: the three best rank_pos; the best one effectively viewed.
        assert ex["feedback_label"][i] == (1.0 if j == 0 else 0.0)
    for group, count, label in (("rank_neg", 3, 2), ("coarse_neg", 2, 1), ("prerank_neg", 1, 0)):
        for j in range(count):
            i = by_video[vid(0, group, j)]
            assert ex["stage"][i] == label and ex["label"][i] == label
            assert ex["rank_index"][i] == (10 + j if group == "rank_neg" else -1)
    # Padding: ids PAD_ID, times 0; context from the request; zeros kept (gender 0).
    assert (ex["author_id"][real:] == features.PAD_ID).all()
    assert (ex["upload_timestamp"][real:] == 0).all() and (ex["duration"][real:] == 0).all()
    assert ex["gender"].tolist() == [0] and ex["user_id"].tolist() == [0]
    assert ex["request_timestamp"].tolist() == [logs.BASE_TS]
    np.testing.assert_array_equal(ex["seq_video_id"][:2], [7, features.PAD_ID])
    assert result.counts["rows_in_examples"] == real
    assert result.counts["not_in_examples:beyond_group_size:rank_pos"] == 12 - GROUP
    assert result.counts["requests_written"] == 1


def test_list_position_carries_no_label_information() -> None:
    # 2,000 requests of 40 candidates, the 10 ground-truth items first in the input: after the
    # shuffle each position holds a ground-truth item a quarter of the time.
    hits = np.zeros(40)
    for request in range(2000):
        videos = [request * 100 + j for j in range(40)]
        order = listwise.candidate_order(request, videos)
        hits += np.array([i < 10 for i in order])
    share = hits / 2000
    # Binomial(2000, 0.25) per position: sd ~0.0097; 5 sd.
    assert np.abs(share - 0.25).max() < 0.05, share.round(3)
    assert abs(share[:10].mean() - 0.25) < 0.015  # the head of the list is not enriched


def test_candidate_order_is_stable_across_processes_and_hash_seeds() -> None:
    import subprocess
    import sys

    videos = [5, 900, 17, 3, 42, 8, 1_000_000_007]
    here = listwise.candidate_order(123456789, videos)
    code = (
        "from components.recflow_example_gen import listwise;"
        f"print(listwise.candidate_order(123456789, {videos}))"
    )
    for seed in ("0", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            check=True,
        ).stdout
        assert out.strip() == str(here)
    # Independent of the input order: the same candidates in reverse land in the same order.
    reverse = listwise.candidate_order(123456789, videos[::-1])
    assert [videos[::-1][i] for i in reverse] == [videos[i] for i in here]
    assert sorted(here) == list(range(len(videos)))


def test_feedback_label_mode_labels_exposed_effective_views(logs) -> None:
    frame = logs.make_log(1)
    config = listwise.ListConfig(label_mode="feedback")
    ex = _parse(listwise.build_request(0, _chunks(frame), config).example)
    np.testing.assert_array_equal(ex["label"], ex["feedback_label"])
    best = ex["video_id"].tolist().index(logs.video_id(0, "rank_pos", 0))
    assert ex["label"].sum() == 1.0 and ex["label"][best] == 1.0


def test_list_and_group_size_are_configurable(logs) -> None:
    frame = logs.make_log(1)
    config = listwise.ListConfig(list_size=12, group_size=2)
    ex = _parse(listwise.build_request(0, _chunks(frame), config).example, 12)
    assert sorted(ex["stage"][:7].tolist()) == [0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_array_equal(ex["stage"][7:], -1)
    rank_pos = ex["stage"] == 3
    np.testing.assert_allclose(sorted(ex["label"][rank_pos]), [3.5, 4.0])  # 3 + (2 - r) / 2
    with pytest.raises(ValueError, match="exceeds list_size"):
        listwise.ListConfig(list_size=12, group_size=4)
    with pytest.raises(ValueError, match="label_mode"):
        listwise.ListConfig(label_mode="clicks")


def test_rows_spread_over_chunks_give_the_same_example(logs) -> None:
    frame = logs.make_log(1)
    whole = listwise.build_request(0, _chunks(frame), listwise.ListConfig()).example
    halves = _chunks(frame.iloc[::2], "a.parquet") + _chunks(frame.iloc[1::2], "b.parquet")
    split = listwise.build_request(0, reversed(halves), listwise.ListConfig()).example
    assert _parse(split)["video_id"].tolist() == _parse(whole)["video_id"].tolist()


def test_second_copy_of_a_row_is_a_dead_letter(logs) -> None:
    frame = logs.make_log(1)
    doubled = frame.iloc[[*range(len(frame)), 5]].reset_index(drop=True)
    result = listwise.build_request(0, _chunks(doubled), listwise.ListConfig())
    assert [(d["kind"], d["field"], d["row"]) for d in result.dead_letters] == [
        ("duplicate", "video_id", len(frame))
    ]
    assert "f.parquet:5" in result.dead_letters[0]["reason"]
    assert result.counts["rows_dead_lettered"] == 1
    assert _parse(result.example)["video_id"].tolist().count(frame.at[5, "video_id"]) == 1


def test_row_disagreeing_with_its_request_context_is_a_dead_letter(logs) -> None:
    frame = logs.make_log(1)
    frame.at[3, "user_id"] = 42
    result = listwise.build_request(0, _chunks(frame), listwise.ListConfig())
    letter = result.dead_letters[0]
    assert (letter["kind"], letter["field"], letter["row"]) == ("context_mismatch", "user_id", 3)
    assert letter["record"]["user_id"] == 42
    assert _parse(result.example)["user_id"].tolist() == [0]  # the majority's


def test_request_without_ground_truth_writes_no_example(logs) -> None:
    frame = logs.make_log(1, group_counts={"rank_neg": 2, "coarse_neg": 1})
    result = listwise.build_request(0, _chunks(frame), listwise.ListConfig())
    assert result.example is None
    assert result.counts["requests_without_ground_truth"] == 1
    assert result.counts["not_in_examples:request_without_ground_truth"] == 3
    assert result.counts["rows_not_in_examples"] == 3


# --- N stages: the three-stage groups (rank_pos split by the re-ranking flags) ---------------


def _three_stage_log(logs):
    """One request: rank_pos rows 0-2 rerank_pos (exposed), 3-8 rerank_neg, 9-11 neither."""
    frame = logs.make_log(1)
    rank_pos = frame["rank_pos"] == 1
    j = frame["video_id"] % 100
    frame.loc[rank_pos & (j >= 3) & (j < 9), "rerank_neg"] = 1
    frame.loc[rank_pos & (j < 9), "rerank_index"] = j[rank_pos & (j < 9)]
    return frame


def test_three_stage_groups_labels_codes_and_counts(logs) -> None:
    frame = _three_stage_log(logs)
    config = listwise.ListConfig(list_size=50, groups=listwise.THREE_STAGE_GROUPS)
    assert config.resolved_group_size == 10
    result = listwise.build_request(0, _chunks(frame), config)
    ex = _parse(result.example, 50)
    real = 3 + 6 + 3 + 2 + 1
    np.testing.assert_array_equal(ex["mask"], [1] * real + [0] * (50 - real))
    by_video = {int(v): i for i, v in enumerate(ex["video_id"][:real])}
    vid = logs.video_id
    for j in range(3):  # the ground truth: rerank_pos, graded by rerank_index
        i = by_video[vid(0, "rank_pos", j)]
        assert ex["stage"][i] == 4 and ex["label"][i] == pytest.approx(4 + (10 - j) / 10)
    for j in range(3, 9):
        i = by_video[vid(0, "rank_pos", j)]
        assert ex["stage"][i] == 3 and ex["label"][i] == 3.0
    for group, count, code in (("rank_neg", 3, 2), ("coarse_neg", 2, 1), ("prerank_neg", 1, 0)):
        for j in range(count):
            i = by_video[vid(0, group, j)]
            assert ex["stage"][i] == code and ex["label"][i] == code
    assert all(vid(0, "rank_pos", j) not in by_video for j in range(9, 12))
    # Counts add up: every valid row is in the example or left out with a reason.
    assert result.counts["rows_in_examples"] == real
    assert result.counts["not_in_examples:not_in_groups"] == 3
    assert result.counts["rows_not_in_examples"] == 3
    assert real + 3 == len(frame)
    # Inside the three-stage schema's domains.
    schema = build_schema(50, 5)
    domains = {f.name: f for f in schema.feature}
    assert domains["stage"].int_domain.max == 4 and domains["label"].float_domain.max == 5.0
    assert ex["stage"].max() <= 4 and ex["label"].max() <= 5.0
    assert domains["mask"].shape.dim[0].size == 50


def test_three_stage_request_without_rerank_pos_writes_no_example(logs) -> None:
    frame = _three_stage_log(logs)
    frame["rerank_pos"] = 0
    frame["realshow"] = 0
    config = listwise.ListConfig(list_size=50, groups=listwise.THREE_STAGE_GROUPS)
    result = listwise.build_request(0, _chunks(frame), config)
    assert result.example is None
    assert result.counts["requests_without_ground_truth"] == 1
    assert result.counts["rows_not_in_examples"] == len(frame)


def test_default_groups_are_unchanged_by_the_re_ranking_flags(logs) -> None:
    frame = _three_stage_log(logs)
    plain = listwise.build_request(0, _chunks(logs.make_log(1)), listwise.ListConfig())
    flagged = listwise.build_request(0, _chunks(frame), listwise.ListConfig())
    a, b = _parse(plain.example), _parse(flagged.example)
    for name in ("video_id", "label", "stage", "mask"):
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (("rank_pos", "rerank_pos", "rank_neg"), "subset of rank_pos"),
        (("rerank_pos", "clicked"), "unknown group"),
        (("rank_neg", "rank_neg"), "twice"),
    ],
)
def test_malformed_groups_are_refused(groups, message) -> None:
    with pytest.raises(ValueError, match=message):
        listwise.ListConfig(list_size=50, groups=groups)


def test_graded_label_of_the_three_stage_groups() -> None:
    groups = listwise.THREE_STAGE_GROUPS
    assert listwise.graded_label("rerank_pos", 0, 10, groups) == 5.0
    assert listwise.graded_label("rerank_pos", -1, 10, groups) == 4.0  # no position: no bonus
    assert [listwise.graded_label(g, 3, 10, groups) for g in groups[1:]] == [3.0, 2.0, 1.0, 0.0]
