"""A three-stage cascade (retrieval, pre-ranking, ranking) exported, pushed and served.

The stages are REAL trained layers of the session's short training runs (``conftest.trained``):
version 1's retrieval and ranking, with version 2's ranking layer as the middle (pre-ranking)
stage, handed to ``exporter.export_cascade`` as a model with ``stage_configs`` and
``stage_layers`` (the shape the N-stage ``CascadeModel`` has). So the chain's middle stage
disagrees with the last, and a cut-off there is observable. No extra training. The export is
pushed by the pipeline's CascadePusher executor on hand-built artifacts (``pushed3``).
"""

from __future__ import annotations

import functools
import json
import os
import types
from pathlib import Path

import httpx
import numpy as np
import pytest

from models import features
from models.stage_spec import StageSpec

pytestmark = pytest.mark.slow

K1 = 100
THREE = (
    StageSpec("retrieval", "retrieval", keep=40, kind="two_tower"),
    StageSpec("prerank", "rescore", keep=30, kind="din"),
    StageSpec("ranking", "rescore", keep=20, kind="din"),
)
NAMES = [s.name for s in THREE]


@pytest.fixture(scope="module")
def three_stage_export(tmp_path_factory, trained, transformed_log) -> dict[str, Path]:
    """``export_cascade`` of a 3-stage model; stage name -> SavedModel folder."""
    import tensorflow_transform as tft

    from models import exporter

    first, second = trained[1], trained[2]
    model = types.SimpleNamespace(
        stage_configs=THREE,  # any objects with name/kind/keep/role
        stage_layers={
            "retrieval": first.model.retrieval,
            "prerank": second.model.ranking,
            "ranking": first.model.ranking,
        },
    )
    tft_output = tft.TFTransformOutput(transformed_log["transform_graph"])
    root = tmp_path_factory.mktemp("three_stage") / "Format-Serving"
    return exporter.export_cascade(model, tft_output, first.corpus, root, top_k=K1)


@pytest.fixture(scope="module")
def pushed3(tmp_path_factory, three_stage_export, transformed_log) -> Path:
    """The 3-stage Model artifact pushed by the pipeline's CascadePusher executor (hand-built
    artifacts: the export above, a blessing, the log's raw examples for the warmup requests):
    the stages are read from ``cascade.json``, validated in a fresh process, pushed."""
    from tfx.types import standard_artifacts

    from components.cascade_pusher.executor import Executor

    tmp = tmp_path_factory.mktemp("serving3")
    model = standard_artifacts.Model()
    model.uri = str(three_stage_export["ranking"].parent.parent)  # holds Format-Serving/
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp / "blessing")
    blessing.set_int_custom_property("blessed", 1)
    examples = standard_artifacts.Examples()
    examples.uri = transformed_log["examples"]
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp / "pushed_model")
    serving = tmp / "serving"
    Executor().Do(
        {"model": [model], "model_blessing": [blessing], "examples": [examples]},
        {"pushed_model": [pushed]},
        {
            "serving_dir": str(serving),
            "eval_split": "eval",
            "warmup_requests": 4,
            "min_index_recall": 0.95,
        },
    )
    assert pushed.get_int_custom_property("pushed") == 1
    return serving


@pytest.fixture(scope="module")
def version3(pushed3) -> int:
    from serving import manifest as manifest_lib

    return int(manifest_lib.read_manifest(pushed3)["version"])


def test_export_and_push_three_stages_as_one_version(pushed3, version3):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from components.cascade_pusher import pair_push
    from serving import manifest as manifest_lib

    manifest = manifest_lib.read_manifest(pushed3)
    assert manifest["order"] == NAMES
    assert [(e["role"], e["keep"]) for _, e in manifest_lib.chain(manifest)] == [
        ("retrieval", 40),
        ("rescore", 30),
        ("rescore", 20),
    ]
    assert manifest["stages"]["retrieval"]["index"]["kind"] == "brute_force"
    config = (pushed3 / "models.config").read_text()
    assert [line.split('"')[1] for line in config.splitlines() if "name:" in line] == NAMES
    assert config.count(f"versions: {version3}") == 3
    for stage in NAMES:
        warmup_file = pushed3 / stage / str(version3) / pair_push.WARMUP_FILE
        warm = list(tf.data.TFRecordDataset(str(warmup_file)).as_numpy_iterator())
        assert len(warm) == 4
        request = prediction_log_pb2.PredictionLog.FromString(warm[0]).predict_log.request
        assert request.model_spec.name == stage
        assert ("video_id" in request.inputs) == (stage != "retrieval")


def test_crash_mid_push_keeps_the_previous_three_tuple(
    tmp_path, three_stage_export, monkeypatch: pytest.MonkeyPatch
):
    from components.cascade_pusher import pair_push

    serving = tmp_path / "serving"
    good = pair_push.push_cascade(three_stage_export, serving, {}, stages=THREE, validate=False)
    before = (serving / "manifest.json").read_text()
    config_before = (serving / "models.config").read_text()

    real_rename = os.rename
    calls = []

    def crash_on_third_stage(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("simulated crash: power lost before the third stage")
        return real_rename(src, dst)

    monkeypatch.setattr(pair_push.os, "rename", crash_on_third_stage)
    with pytest.raises(OSError, match="simulated crash"):
        pair_push.push_cascade(three_stage_export, serving, {}, stages=THREE, validate=False)
    monkeypatch.undo()

    # Retrieval and prerank of the new version landed, ranking did not: the manifest and
    # models.config still name the previous complete 3-tuple.
    assert (serving / "manifest.json").read_text() == before
    assert (serving / "models.config").read_text() == config_before
    assert len(list((serving / "prerank").iterdir())) == 2
    assert [p.name for p in (serving / "ranking").iterdir()] == [str(good)]

    # The next push clears the leftovers and publishes a complete 3-tuple.
    third = pair_push.push_cascade(three_stage_export, serving, {}, stages=THREE, validate=False)
    for stage in NAMES:
        assert sorted(p.name for p in (serving / stage).iterdir()) == [str(good), str(third)]
    assert json.loads((serving / "manifest.json").read_text())["version"] == third


@functools.cache
def _signature(path: str):
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def _expected(export: dict[str, Path], user: dict, k: int, keep: int = 30) -> list[dict]:
    """The three SavedModels called directly: retrieval's top K1, prerank's best ``keep`` (ties
    in retrieval's order), ranking's best ``k`` of those (ties in prerank's order)."""
    import tensorflow as tf

    sigs = {s: _signature(str(export[s])) for s in NAMES}
    query = {}
    for name in features.RETRIEVAL_QUERY_FEATURES:
        if name in features.SEQUENCE_FEATURES:
            values = user.get(name, [])
            padding = [features.PAD_ID] * (features.SEQ_LEN - len(values))
            query[name] = tf.constant([values + padding], tf.int64)
        else:
            query[name] = tf.constant([user[name]], tf.int64)
    retrieved = sigs["retrieval"](**query)
    ids = retrieved["video_id"].numpy()[0, :K1]
    rscores = retrieved["scores"].numpy()[0, :K1]
    pscores = sigs["prerank"](**query, video_id=tf.constant(ids[None, :]))["scores"].numpy()[0]
    kept = sorted(range(len(ids)), key=lambda i: (-pscores[i], i))[:keep]
    fscores = sigs["ranking"](**query, video_id=tf.constant(ids[kept][None, :]))["scores"].numpy()[
        0
    ]
    order = sorted(range(len(kept)), key=lambda j: (-fscores[j], j))[:k]
    return [
        {
            "video_id": int(ids[kept[j]]),
            "retrieval_score": float(rscores[kept[j]]),
            "retrieval_rank": kept[j] + 1,
            "prerank_score": float(pscores[kept[j]]),
            "prerank_rank": j + 1,
            "ranking_score": float(fscores[j]),
            "ranking_rank": position + 1,
        }
        for position, j in enumerate(order)
    ]


def _assert_items(got: list[dict], want: list[dict]) -> None:
    assert [i["video_id"] for i in got] == [i["video_id"] for i in want]
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for key in w:
            if key.endswith("_score"):
                np.testing.assert_allclose(g[key], w[key], rtol=1e-5, atol=1e-6)
            else:
                assert g[key] == w[key], (key, g, w)


def test_service_runs_the_three_stage_chain(
    pushed3, version3, three_stage_export, start_service, helpers
):
    url = start_service(pushed3, k1=K1)
    models = httpx.get(f"{url}/v1/models").json()
    assert models["order"] == NAMES and models["version"] == version3
    user = helpers.make_user(helpers.users[0], seq=helpers.known[:3])
    response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["versions"] == {"pair": version3, **{stage: version3 for stage in NAMES}}
    want = _expected(three_stage_export, user, 10)
    _assert_items(body["items"], want)
    # The middle stage matters: it drops some of retrieval's top 30 and re-orders the rest.
    assert sorted(i["retrieval_rank"] for i in want) != sorted(i["prerank_rank"] for i in want)
    assert max(i["retrieval_rank"] for i in want) > 10
    timing = [entry.split(";")[0] for entry in response.headers["Server-Timing"].split(", ")]
    assert timing == ["queue", *NAMES, "total", "batch"]
    # The last stage is handed prerank's 30: a larger k names that cut-off.
    too_many = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 31}, timeout=60)
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "k"
    assert (
        "prerank_rank"
        in httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 30}, timeout=60).json()[
            "items"
        ][0]
    )
    text = httpx.get(f"{url}/metrics").text
    assert 'lcron_latency_seconds_count{stage="prerank"} 2.0' in text


def test_service_keep_override_and_tf_serving_backend(
    pushed3, three_stage_export, start_service, helpers
):
    from serving.backends import TFServingRestBackend
    from serving.testing.tfserving_double import TFServingDouble

    double = TFServingDouble(pushed3)
    assert sorted(double.load_config()) == sorted(NAMES)  # models.config serves all three
    try:
        backend = TFServingRestBackend(double.start_rest())
        url = start_service(pushed3, backend=backend, k1=K1, stage_keep={"prerank": 12})
        user = helpers.make_user(helpers.users[1], seq=helpers.known[3:6])
        response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 5}, timeout=60)
        assert response.status_code == 200, response.text
        _assert_items(response.json()["items"], _expected(three_stage_export, user, 5, keep=12))
        assert "prerank;dur=" in response.headers["Server-Timing"]
    finally:
        double.stop()


def test_a_two_stage_deployment_pushed_before_n_stages_keeps_serving(
    pushed, start_service, direct, helpers
):
    """A manifest of format 1 (no format, no order) on disk: served as retrieval -> ranking."""
    legacy = {
        "version": 1,
        "stages": {
            s: {"model_name": s, "version": 1, "path": f"{s}/1"} for s in ("retrieval", "ranking")
        },
        "pushed_at": "2026-01-01T00:00:00+00:00",
    }
    (pushed / "manifest.json").write_text(json.dumps(legacy))
    url = start_service(pushed)
    assert httpx.get(f"{url}/v1/models").json()["order"] == ["retrieval", "ranking"]
    user = helpers.make_user(helpers.users[4], seq=helpers.known[:2])
    body = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}, timeout=60).json()
    assert body["versions"] == {"pair": 1, "retrieval": 1, "ranking": 1}
    helpers.assert_items_equal(body["items"], direct.expected(1, user, 10))
