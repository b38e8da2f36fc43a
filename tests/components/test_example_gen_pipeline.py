"""RecFlowExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> Transform on
LocalDagRunner with SQLite ML Metadata, over a simulated log with corrupted rows."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models import features

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

ROOT = Path(__file__).resolve().parents[2]
DAYS, REQUESTS, SEED, CORRUPT = 3, 30, 5, 0.04
LIST_SIZE = features.LIST_SIZE


def _only(pattern: str) -> str:
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from tfx import v1 as tfx

    from components.recflow_example_gen import RecFlowExampleGen, day_splits
    from models.code_version import code_version
    from simulator import SimulatorConfig, simulate

    tmp = tmp_path_factory.mktemp("example_gen_pipeline")
    manifest = simulate(
        SimulatorConfig(),
        tmp / "logs",
        days=DAYS,
        requests_per_day=REQUESTS,
        seed=SEED,
        corrupt_fraction=CORRUPT,
    )
    # Same seed without corruption: exactly the valid rows of the corrupted log.
    simulate(SimulatorConfig(), tmp / "clean", days=DAYS, requests_per_day=REQUESTS, seed=SEED)
    with_truth = {}
    for day in range(DAYS):
        files = sorted((tmp / "clean").glob(f"day_{day:02d}/*.parquet"))
        clean = pd.concat(pd.read_parquet(p) for p in files)
        with_truth[day] = set(clean.loc[clean["rank_pos"] == 1, "request_id"].tolist())
    example_gen = RecFlowExampleGen(
        input_base=str(tmp / "logs"),
        input_config=day_splits([0, 1], [2]),
        max_dead_letter_share=0.2,  # 4% corrupted on purpose (1% would fail the run)
    ).with_id("RecFlowExampleGen")
    statistics = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema = tfx.components.ImportSchemaGen(schema_file=str(ROOT / "data" / "schema.pbtxt"))
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_version": code_version()},
    )
    root = tmp / "pipeline_root"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="ingestion-test",
        pipeline_root=str(root),
        components=[example_gen, statistics, schema, validator, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp / "metadata.sqlite")
        ),
        beam_pipeline_args=["--direct_num_workers=1"],
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return {"root": root, "manifest": manifest, "with_truth": with_truth}


def _records(pattern: str) -> list[bytes]:
    files = sorted(glob.glob(pattern))
    assert files, pattern
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_example_gen_outputs_examples_dead_letters_and_stats(run) -> None:
    root, manifest = run["root"], run["manifest"]
    examples_dir = _only(str(root / "RecFlowExampleGen" / "examples" / "*"))
    for split, days in (("train", (0, 1)), ("eval", (2,))):
        records = _records(os.path.join(examples_dir, f"Split-{split}", "*.gz"))
        request_ids = [
            tf.train.Example.FromString(r).features.feature["request_id"].int64_list.value[0]
            for r in records
        ]
        # One example per request with ground truth (a valid rank_pos row) in the split's days.
        assert sorted(request_ids) == sorted(set().union(*(run["with_truth"][d] for d in days)))
    stats = json.loads(
        Path(_only(str(root / "RecFlowExampleGen/ingest_stats/*/stats.json"))).read_text()
    )
    assert stats["rows_read"] == manifest["rows"]
    assert stats["rows_dead_lettered"] == manifest["corrupt_rows"] > 0
    assert stats["rows_read"] == (
        stats["rows_in_examples"] + stats["rows_dead_lettered"] + stats["rows_not_in_examples"]
    )
    letters = [
        json.loads(line)
        for path in glob.glob(str(root / "RecFlowExampleGen/dead_letters/*/Split-*/*.jsonl"))
        for line in Path(path).read_text().splitlines()
    ]
    assert len(letters) == manifest["corrupt_rows"]
    assert all(letter["reason"] and letter["field"] for letter in letters)


def test_example_validator_finds_no_anomalies(run) -> None:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    paths = glob.glob(str(run["root"] / "ExampleValidator" / "anomalies" / "*" / "Split-*" / "*"))
    assert {Path(p).parent.name for p in paths} == {"Split-train", "Split-eval"}
    for path in paths:
        anomalies = anomalies_pb2.Anomalies.FromString(Path(path).read_bytes())
        assert not anomalies.anomaly_info, (path, anomalies)
        assert not anomalies.dataset_anomaly_info.reason


def _transform_output(run):
    import tensorflow_transform as tft

    return tft.TFTransformOutput(_only(str(run["root"] / "Transform" / "transform_graph" / "*")))


def test_transformed_examples_have_the_expected_shapes(run) -> None:
    from models import preprocessing

    output = _transform_output(run)
    spec = output.transformed_feature_spec()
    xf = features.transformed_name
    pattern = str(run["root"] / "Transform/transformed_examples/*/Split-eval/*.gz")
    batch = tf.io.parse_example(_records(pattern), spec)
    n = REQUESTS
    assert batch[xf("user_id")].shape == (n, 1)
    assert batch[xf("video_id")].shape == (n, LIST_SIZE)
    assert batch[xf("seq_video_id")].shape == (n, features.SEQ_LEN)
    assert batch[xf(features.ITEM_AGE)].dtype == tf.float32
    assert batch[xf(features.LABEL)].shape == (n, LIST_SIZE)
    sizes = preprocessing.vocabulary_sizes(output)
    assert set(sizes) == set(features.VOCABULARIES)
    for vocab, names in features.VOCABULARIES.items():
        for name in names:
            index = batch[xf(name)].numpy()
            assert index.min() >= 0 and index.max() < sizes[vocab], name
    mask = batch[xf(features.MASK)].numpy()
    video = batch[xf("video_id")].numpy()
    assert (video[mask == 0] == preprocessing.PAD_INDEX).all()
    assert (video[mask == 1] != preprocessing.PAD_INDEX).all()
    # New items of the eval day that the train split never saw land in OOV buckets.
    vocab_size = output.vocabulary_size_by_name(preprocessing.VOCAB_FILENAMES["video_id"])
    assert (video[mask == 1] > vocab_size).any()


def test_transform_graph_serves_request_time_features_only(run) -> None:
    layer = _transform_output(run).transform_features_layer()
    raw = {name: tf.constant([[3]], tf.int64) for name in features.RETRIEVAL_QUERY_FEATURES}
    raw["request_timestamp"] = tf.constant([[1_704_067_200_000 + 5 * 3_600_000]], tf.int64)
    for name in features.SEQUENCE_FEATURES:
        raw[name] = tf.constant([[1, 2] + [features.PAD_ID] * (features.SEQ_LEN - 2)], tf.int64)
    for name in features.ITEM_FEATURES:
        raw[name] = tf.ones([1, LIST_SIZE], tf.int64)
    out = layer(raw)
    xf = features.transformed_name
    assert xf(features.LABEL) not in out and xf(features.STAGE) not in out
    assert out[xf(features.REQUEST_HOUR)].numpy().tolist() == [[5.0]]
    assert out[xf(features.REQUEST_DAY_OF_WEEK)].numpy().tolist() == [[0.0]]  # 2024-01-01: Monday
    assert out[xf("video_id")].shape == (1, LIST_SIZE)
    np.testing.assert_array_equal(out[xf(features.SEQ_MASK)].numpy()[0, :3], [1.0, 1.0, 0.0])


def test_driver_fingerprint_covers_every_glob_and_sees_changes(tmp_path: Path) -> None:
    from tfx.utils import proto_utils

    from components.recflow_example_gen import splits
    from components.recflow_example_gen.driver import RecFlowDriver

    for day in (0, 1):
        (tmp_path / f"day_{day:02d}").mkdir()
        (tmp_path / f"day_{day:02d}" / "part-0.parquet").write_bytes(b"x" * (day + 1))
    config = proto_utils.proto_to_json(splits.day_splits([0], [1]))

    def fingerprint() -> str:
        props = {"input_base": str(tmp_path), "input_config": config}
        return RecFlowDriver(None).resolve_exec_properties(props, None, None)["input_fingerprint"]

    before = fingerprint()
    assert "split:train,num_files:1,total_bytes:1" in before
    assert "split:eval,num_files:1,total_bytes:2" in before
    (tmp_path / "day_01" / "part-1.parquet").write_bytes(b"more")
    assert fingerprint() != before
