"""The tfserving backend (REST and gRPC) against a TEST DOUBLE of TF Serving's C++ server.

The double (serving.testing.tfserving_double) serves the real SavedModels named by the pushed
``models.config`` with TF Serving's wire formats; the real server runs in docker-compose only.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from serving.backends import TFServingGrpcBackend, TFServingRestBackend
from serving.testing.tfserving_double import TFServingDouble

pytestmark = pytest.mark.slow


@pytest.fixture
def tfserving(pushed):
    double = TFServingDouble(pushed)
    double.load_config()
    double.rest_url = double.start_rest()
    double.grpc_target = double.start_grpc()
    yield double
    double.stop()


def _backend(double, protocol):
    if protocol == "rest":
        return TFServingRestBackend(double.rest_url)
    return TFServingGrpcBackend(double.grpc_target)


def _query_json(user):
    query = {k: [user[k]] for k in ("request_timestamp", "user_id", "device_id", "age")}
    query.update({k: [user[k]] for k in ("gender", "province")})
    for name in ("seq_video_id", "seq_author_id", "seq_category_level_two"):
        values = user.get(name, [])
        query[name] = [values + [-1] * (50 - len(values))]
    return query


def test_double_speaks_tf_serving_rest_formats(tfserving, direct, helpers):
    url = tfserving.rest_url
    status = httpx.get(f"{url}/v1/models/ranking/versions/1").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert httpx.get(f"{url}/v1/models/ranking/versions/9").status_code == 404

    user = helpers.make_user(helpers.users[0], seq=helpers.known[3:6])
    query = _query_json(user)
    retrieved = httpx.post(
        f"{url}/v1/models/retrieval/versions/1:predict", json={"inputs": query}
    ).json()["outputs"]
    assert sorted(retrieved) == ["scores", "video_id"]  # several outputs: an object
    candidates = [retrieved["video_id"][0][:5]]
    ranked = httpx.post(
        f"{url}/v1/models/ranking:predict", json={"inputs": {**query, "video_id": candidates}}
    ).json()
    assert np.asarray(ranked["outputs"]).shape == (1, 5)  # a single output comes back bare

    row = {k: v[0] for k, v in {**query, "video_id": candidates}.items()}
    rows = httpx.post(f"{url}/v1/models/ranking:predict", json={"instances": [row]}).json()
    np.testing.assert_allclose(rows["predictions"], ranked["outputs"], rtol=1e-6)

    want = direct.expected(1, user, k=100)
    by_id = {i["video_id"]: i["ranking_score"] for i in want}
    np.testing.assert_allclose(ranked["outputs"][0], [by_id[v] for v in candidates[0]], rtol=1e-5)

    missing = {k: v for k, v in query.items() if k != "age"}
    bad = httpx.post(f"{url}/v1/models/retrieval:predict", json={"inputs": missing})
    assert bad.status_code == 400 and "age" in bad.json()["error"]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_service_over_tfserving_equals_the_savedmodels(
    protocol, tfserving, pushed, start_service, direct, helpers
):
    url = start_service(pushed, backend=_backend(tfserving, protocol))
    models = httpx.get(f"{url}/v1/models").json()
    assert models["backend"] == f"tfserving-{protocol}"
    assert models["version"] == 1
    users = (
        (helpers.make_user(helpers.users[1], seq=helpers.known[3:6]), 10),
        (helpers.make_user(helpers.unknown, seq=[helpers.unknown]), 3),  # OOV user and item
    )
    for user, k in users:
        response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": k}, timeout=30)
        assert response.status_code == 200, response.text
        helpers.assert_items_equal(response.json()["items"], direct.expected(1, user, k))


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_pair_switches_only_once_tfserving_has_the_new_version(
    protocol, tfserving, pushed, exports, start_service, direct, helpers
):
    url = start_service(pushed, backend=_backend(tfserving, protocol))
    helpers.push(exports, pushed, 2)  # manifest says 2; TF Serving still has only 1 loaded
    time.sleep(0.5)
    models = httpx.get(f"{url}/v1/models").json()
    assert models["version"] == 1
    assert "2" in models["last_reload_error"]
    user = helpers.make_user(helpers.users[2], seq=helpers.known[3:6])
    assert httpx.post(f"{url}/v1/recommend", json={"user": user}).json()["versions"]["pair"] == 1

    tfserving.load_config()  # what TF Serving's --model_config_file polling does
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/v1/models").json()["version"] != 2:
        assert time.monotonic() < deadline, "service did not switch to version 2"
        time.sleep(0.05)
    body = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}).json()
    assert body["versions"] == {"pair": 2, "retrieval": 2, "ranking": 2}
    helpers.assert_items_equal(body["items"], direct.expected(2, user, 10))


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tfserving_down_gives_503_with_retry_hint(
    protocol, tfserving, pushed, start_service, helpers
):
    url = start_service(pushed, backend=_backend(tfserving, protocol))
    user = helpers.make_user(helpers.users[3])
    assert httpx.post(f"{url}/v1/recommend", json={"user": user}).status_code == 200
    tfserving.stop()
    for _ in range(3):
        response = httpx.post(f"{url}/v1/recommend", json={"user": user}, timeout=30)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        error = response.json()["error"]
        assert error["type"] == "unavailable" and "retrieval" in error["message"]
    assert httpx.get(f"{url}/healthz").status_code == 200  # the service itself is alive
    metrics = httpx.get(f"{url}/metrics").text
    assert 'lcron_errors_total{kind="backend",stage="retrieval"} 3.0' in metrics
