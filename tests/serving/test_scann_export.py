"""The ScaNN export of the trained retrieval stage: recall measured at export, gated at push,
loaded in a fresh process and in the service, served by TF Serving only with ScaNN's ops.

The session's trained cascade (version 1 of ``conftest.trained``) is re-exported with two ScaNN
indexes over its training corpus: ``exact`` searches every partition and re-scores every item
exactly (so it must answer exactly what the trainer's brute-force export answers), ``coarse``
searches one partition of 64 with quantized scores and re-scores only the top K (a bad index the
push must refuse), ``tuned`` leaves the partitions searched to the export's tuning.
"""

from __future__ import annotations

import glob
import json
import time

import httpx
import pytest

from models.config import IndexConfig

pytestmark = pytest.mark.slow

K = 100  # the trained export's top K (ModelConfig.top_k)


@pytest.fixture(scope="module")
def scann_exports(tmp_path_factory, trained, transformed_log):
    """{"exact" | "coarse": {stage: SavedModel dir}} of version 1's trained stages."""
    import tensorflow_transform as tft

    from models import data, exporter

    cascade = trained[1]
    tft_output = tft.TFTransformOutput(transformed_log["transform_graph"])
    eval_files = f"{transformed_log['transformed_examples']}/Split-eval/*"
    dataset = data.input_fn(eval_files, tft_output, 128, shuffle=False, repeat=False)
    queries = exporter.query_embeddings(cascade.model.retrieval, dataset, 200)
    items = len(cascade.corpus)
    configs = {
        "exact": IndexConfig(
            kind="scann",
            num_leaves=8,
            num_leaves_to_search=8,
            partitioning="direction",  # centred embeddings: scores must still be exact
            num_reordering_candidates=items,
        ),
        "coarse": IndexConfig(
            kind="scann",
            num_leaves=64,
            num_leaves_to_search=1,
            partitioning="l2",
            scoring="quantized",
            num_reordering_candidates=K,
            dimensions_per_block=4,
        ),
        # Leaves to search left to the export's tuning.
        "tuned": IndexConfig(kind="scann", num_leaves=32, target_recall=0.9),
    }
    root = tmp_path_factory.mktemp("scann_exports")
    return {
        name: exporter.export_stages(
            cascade.model.retrieval,
            cascade.model.ranking,
            tft_output,
            cascade.corpus,
            root / name,
            top_k=K,
            index=config,
            recall_queries=queries,
        )
        for name, config in configs.items()
    }


@pytest.fixture(scope="module")
def warmup_records(transformed_log):
    import tensorflow as tf

    from components.cascade_pusher import warmup

    files = sorted(glob.glob(f"{transformed_log['examples']}/Split-eval/*"))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(8)
    return warmup.warmup_records([bytes(r) for r in dataset.as_numpy_iterator()], limit=8)


def _report(export_dirs) -> dict:
    from models.exporter import INDEX_REPORT

    return json.loads((export_dirs["retrieval"] / INDEX_REPORT).read_text())


def _signatures(path) -> dict:
    import tensorflow as tf

    from serving import custom_ops

    custom_ops.load_for(path)
    model = tf.saved_model.load(str(path))
    return {
        name: (fn.structured_input_signature, fn.structured_outputs)
        for name, fn in model.signatures.items()
    }


def test_the_export_reports_its_index_and_keeps_the_signatures(scann_exports, trained):
    exact, coarse = _report(scann_exports["exact"]), _report(scann_exports["coarse"])
    assert exact["kind"] == coarse["kind"] == "scann" and not exact["exact"]
    assert exact["items"] == len(trained[1].corpus) and exact["k"] == K
    assert exact["recall_at_k"] == 1.0 and exact["recall_queries"] == 200
    assert coarse["recall_at_k"] < 0.9, coarse  # one partition of 64: most of the top K missed
    assert coarse["params"]["leaves_to_search"] == 1
    # Tuned on half of the queries for both partitionings, measured on the other half; the
    # cheaper choice is what is saved.
    tuned = _report(scann_exports["tuned"])
    assert tuned["recall_queries"] == 100 and set(tuned["tuning"]) == {"direction", "l2"}
    chosen = tuned["params"]["partitioning"]
    steps = tuned["tuning"][chosen]
    assert steps[-1]["recall_at_k"] >= 0.9 and all(s["recall_at_k"] < 0.9 for s in steps[:-1])
    assert tuned["params"]["leaves_to_search"] == steps[-1]["leaves_to_search"]
    assert all(
        other[-1]["leaves_to_search"] >= steps[-1]["leaves_to_search"]
        for other in tuned["tuning"].values()
    )
    brute = _report(trained[1].export_dirs)  # the trainer's own export (auto: small corpus)
    assert brute["kind"] == "brute_force" and brute["exact"] and brute["recall_at_k"] == 1.0
    # TF Serving clients see the same signatures whichever the index.
    assert _signatures(scann_exports["exact"]["retrieval"]) == _signatures(
        trained[1].export_dirs["retrieval"]
    )


def test_scann_pair_loads_in_a_fresh_process_and_serves_as_brute_force(
    scann_exports, warmup_records, tmp_path, start_service, direct, helpers
):
    from components.cascade_pusher import pair_push
    from serving import manifest as manifest_lib

    serving_dir = tmp_path / "serving"
    # validate=True: both SavedModels are loaded and the warmup requests replayed in a new
    # Python process before anything is published.
    pair_push.push_pair(
        scann_exports["exact"], serving_dir, warmup_records, version=1, min_index_recall=0.95
    )
    index = manifest_lib.read_manifest(serving_dir)["stages"]["retrieval"]["index"]
    assert index["kind"] == "scann" and index["recall_at_k"] == 1.0

    url = start_service(serving_dir)
    models = httpx.get(f"{url}/v1/models").json()
    assert models["stages"]["retrieval"]["index"]["kind"] == "scann"
    # ScaNN searches each query's own partitions: a batch holds one query per query group.
    assert index["params"]["query_groups"] == 4
    assert models["batching"] == {"max_batch": 4, "max_inflight": 1}
    known, unknown = helpers.known, helpers.unknown
    cases = [
        (helpers.make_user(helpers.users[0], seq=known[:3]), 10),
        (helpers.make_user(helpers.users[1]), 100),
        (helpers.make_user(unknown, seq=[unknown, *known[3:5]]), 5),
    ]
    for user, k in cases:
        response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": k}, timeout=30)
        assert response.status_code == 200, response.text
        # direct.expected(1, ...) calls the trainer's brute-force SavedModels of version 1.
        helpers.assert_items_equal(response.json()["items"], direct.expected(1, user, k))


def test_recall_floor_blocks_a_bad_index_and_the_old_pair_stays(
    scann_exports, warmup_records, tmp_path, exports
):
    from components.cascade_pusher import pair_push
    from serving import manifest as manifest_lib

    serving_dir = tmp_path / "serving"
    with pytest.raises(pair_push.IndexRecallError, match="below the floor 0.95"):
        pair_push.push_pair(scann_exports["coarse"], serving_dir, warmup_records, version=1,
                            min_index_recall=0.95)  # fmt: skip
    assert not (serving_dir / manifest_lib.MANIFEST_FILE).exists()
    assert pair_push.existing_versions(serving_dir) == []

    brute = {stage: exports / stage / "1" for stage in pair_push.STAGES}
    pair_push.push_pair(brute, serving_dir, {}, validate=False, version=1, min_index_recall=0.95)
    with pytest.raises(pair_push.IndexRecallError):
        pair_push.push_pair(scann_exports["coarse"], serving_dir, warmup_records, version=2,
                            min_index_recall=0.95)  # fmt: skip
    assert manifest_lib.read_manifest(serving_dir)["version"] == 1
    assert pair_push.existing_versions(serving_dir) == [1]
    # Without a floor the same index is pushed, its recall recorded for whoever looks.
    pair_push.push_pair(scann_exports["coarse"], serving_dir, {}, validate=False, version=2)
    index = manifest_lib.read_manifest(serving_dir)["stages"]["retrieval"]["index"]
    assert index["recall_at_k"] < 0.9


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tf_serving_needs_a_build_with_scann_ops(
    protocol, scann_exports, tmp_path, start_service, direct, helpers
):
    from components.cascade_pusher import pair_push
    from serving.backends import TFServingGrpcBackend, TFServingRestBackend
    from serving.testing.tfserving_double import TFServingDouble

    serving_dir = tmp_path / "serving"
    pair_push.push_pair(scann_exports["exact"], serving_dir, {}, validate=False, version=1)

    def backend(double):
        if protocol == "rest":
            return TFServingRestBackend(double.start_rest())
        return TFServingGrpcBackend(double.start_grpc())

    user = helpers.make_user(helpers.users[2], seq=helpers.known[:2])
    stock = TFServingDouble(serving_dir)  # the stock tensorflow/serving image: no ScaNN ops
    stock.load_config()
    try:
        url = start_service(serving_dir, backend=backend(stock))
        deadline = time.monotonic() + 10
        while not (error := httpx.get(f"{url}/v1/models").json()["last_reload_error"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if protocol == "rest":  # the version's status carries TF Serving's load error
            assert "Op type not registered 'Scann>" in error, error
        else:
            assert "NOT_FOUND" in error, error
        assert httpx.post(f"{url}/v1/recommend", json={"user": user}).status_code == 503
    finally:
        stock.stop()

    with_scann = TFServingDouble(serving_dir, custom_op_libraries=("Scann",))
    with_scann.load_config()
    try:
        url = start_service(serving_dir, backend=backend(with_scann))
        response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}, timeout=30)
        assert response.status_code == 200, response.text
        helpers.assert_items_equal(response.json()["items"], direct.expected(1, user, 10))
    finally:
        with_scann.stop()
