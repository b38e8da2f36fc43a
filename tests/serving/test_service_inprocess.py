"""The cascade service on the in-process backend, over real HTTP, against the SavedModels."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest


def _recommend(url: str, user: dict, k: int = 10) -> httpx.Response:
    return httpx.post(f"{url}/v1/recommend", json={"user": user, "k": k}, timeout=30)


def _wait_for_version(url: str, version: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/models").json()["version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"service did not switch to version {version}")


@pytest.mark.slow
def test_results_equal_the_two_savedmodels_called_directly(pushed, start_service, direct, helpers):
    url = start_service(pushed)
    known, unknown = helpers.known[:3], helpers.unknown
    cases = [
        (helpers.make_user(helpers.users[0], seq=known), 10),
        (helpers.make_user(helpers.users[1]), 1),  # no behaviour sequence: all padding
        # A new user (OOV user and device) with an unknown video in the sequence; k = K1.
        (helpers.make_user(unknown, seq=[unknown, *known]), 100),
    ]
    for user, k in cases:
        response = _recommend(url, user, k)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["versions"] == {"pair": 1, "retrieval": 1, "ranking": 1}
        assert len(body["items"]) == k
        helpers.assert_items_equal(body["items"], direct.expected(1, user, k))
    # Ranking re-orders retrieval's list (the two trained stages disagree): the cascade is not
    # a pass-through of retrieval.
    assert [i["retrieval_rank"] for i in body["items"]] != list(range(1, k + 1))
    assert "ranking;dur=" in response.headers["Server-Timing"]


@pytest.mark.slow
def test_smaller_k1_reranks_only_retrievals_top(pushed, start_service, direct, helpers):
    url = start_service(pushed, k1=20)
    user = helpers.make_user(helpers.users[2], seq=helpers.known[:3])
    body = _recommend(url, user, k=5).json()
    helpers.assert_items_equal(body["items"], direct.expected(1, user, 5, k1=20))
    assert max(i["retrieval_rank"] for i in body["items"]) <= 20
    assert _recommend(url, user, k=21).status_code == 422  # k <= K1


@pytest.mark.slow
def test_health_models_and_metrics(pushed, start_service, helpers):
    url = start_service(pushed)
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "version": 1}
    models = httpx.get(f"{url}/v1/models").json()
    assert models["backend"] == "inprocess"
    assert models["version"] == 1
    assert {s: v["version"] for s, v in models["stages"].items()} == {"retrieval": 1, "ranking": 1}
    assert models["stages"]["ranking"]["path"].endswith("ranking/1")
    # Brute-force retrieval: large batches amortise its scoring of every item.
    assert models["batching"] == {"max_batch": 32, "max_inflight": 1}

    assert _recommend(url, helpers.make_user(helpers.users[3])).status_code == 200
    assert _recommend(url, {"user_id": 1}).status_code == 422
    text = httpx.get(f"{url}/metrics").text
    assert 'lcron_requests_total{code="200",endpoint="/v1/recommend"} 1.0' in text
    assert 'lcron_requests_total{code="422",endpoint="/v1/recommend"} 1.0' in text
    assert 'lcron_errors_total{kind="validation",stage="request"} 1.0' in text
    for stage in ("retrieval", "ranking", "end_to_end"):
        assert f'lcron_latency_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "lcron_pair_version 1.0" in text


def _user(**overrides):
    user = {"user_id": 1, "device_id": 1, "age": 3, "gender": 1, "province": 2}
    user.update(overrides)
    return {k: v for k, v in user.items() if v is not None}


BAD_REQUESTS = [
    # (body, status, field named in the error)
    ({"user": _user(age=None)}, 422, "user.age"),
    ({"user": _user(user_id="1")}, 422, "user.user_id"),
    ({"user": _user(gender=1.5)}, 422, "user.gender"),
    ({"user": _user(province=True)}, 422, "user.province"),
    ({"user": _user(user_id=2**63)}, 422, "user.user_id"),
    ({"user": _user(request_timestamp="now")}, 422, "user.request_timestamp"),
    ({"user": _user(seq_video_id=[1, "x"])}, 422, "user.seq_video_id[1]"),
    ({"user": _user(seq_video_id=list(range(51)))}, 422, "user.seq_video_id"),
    (
        {"user": _user(seq_video_id=[1, 2], seq_author_id=[1])},
        422,
        "user.seq_author_id",
    ),
    ({"user": _user(userid=1)}, 422, "user.userid"),  # unknown field: a typo must not pass
    ({"user": _user(), "k": 0}, 422, "k"),
    ({"user": _user(), "k": 101}, 422, "k"),
    ({"user": _user(), "k": "10"}, 422, "k"),
    ({"k": 10}, 422, "user"),
    ({"user": [1, 2]}, 422, "user"),
]


@pytest.mark.slow
def test_bad_requests_get_4xx_naming_the_field(pushed, start_service):
    url = start_service(pushed, max_body_bytes=4096)
    for body, status, field in BAD_REQUESTS:
        response = httpx.post(f"{url}/v1/recommend", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (body, error)
        assert error["message"]

    malformed = httpx.post(f"{url}/v1/recommend", content=b'{"user": {', timeout=10)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_json"

    oversize = {"user": _user(), "k": 10, "pad": "x" * 5000}
    too_big = httpx.post(f"{url}/v1/recommend", json=oversize)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["field"] == "body"

    def chunks():  # no Content-Length: the limit holds on the bytes actually received
        for _ in range(10):
            yield b" " * 1000

    chunked = httpx.post(f"{url}/v1/recommend", content=chunks())
    assert chunked.status_code == 413

    # The service survived all of it.
    assert httpx.post(f"{url}/v1/recommend", json={"user": _user(), "k": 3}).status_code == 200


@pytest.mark.slow
def test_no_pair_yet_gives_503_then_first_push_is_served(tmp_path, exports, start_service, helpers):
    serving_dir = tmp_path / "serving"
    serving_dir.mkdir()
    url = start_service(serving_dir)
    user = helpers.make_user(helpers.users[4])
    response = _recommend(url, user)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["type"] == "unavailable"
    assert httpx.get(f"{url}/healthz").status_code == 503

    helpers.push(exports, serving_dir, 1)
    _wait_for_version(url, 1)
    assert _recommend(url, user).status_code == 200


@pytest.mark.slow
def test_new_pair_is_swapped_in_without_a_failed_request(
    pushed, exports, start_service, direct, helpers
):
    url = start_service(pushed)
    user = helpers.make_user(helpers.users[5], seq=helpers.known[:3])
    assert direct.expected(1, user, 10) != direct.expected(2, user, 10)  # the swap is visible

    stop = time.monotonic() + 60
    seen: list[tuple[int, int, dict]] = []

    def hammer() -> None:  # until 10 answers of version 2 (or a minute)
        on_new = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < stop and on_new < 10:
                r = client.post("/v1/recommend", json={"user": user, "k": 10})
                body = r.json()
                seen.append((r.status_code, body.get("versions", {}).get("pair"), body))
                on_new += body.get("versions", {}).get("pair") == 2

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        time.sleep(0.3)  # requests are flowing on version 1
        helpers.push(exports, pushed, 2)
        for f in futures:
            f.result()

    assert [s for s, _, _ in seen if s != 200] == []
    versions = [v for _, v, _ in seen]
    assert versions[0] == 1 and versions[-1] == 2
    assert versions.count(1) >= 4 and versions.count(2) >= 40  # load on both sides of the swap
    # Every answer is entirely one pair's: never retrieval of one run with ranking of the other.
    want = {v: direct.expected(v, user, 10) for v in (1, 2)}
    for _, version, body in seen:
        assert body["versions"] == {"pair": version, "retrieval": version, "ranking": version}
        helpers.assert_items_equal(body["items"], want[version])
    assert httpx.get(f"{url}/v1/models").json()["version"] == 2


@pytest.mark.slow
def test_a_broken_push_keeps_the_old_pair_in_service(pushed, start_service, helpers):
    from serving import manifest

    url = start_service(pushed)
    for stage in ("retrieval", "ranking"):
        (pushed / stage / "3").mkdir(parents=True)
        (pushed / stage / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    manifest.write_manifest(pushed, 3)
    deadline = time.monotonic() + 10
    while not (error := httpx.get(f"{url}/v1/models").json()["last_reload_error"]):
        assert time.monotonic() < deadline, "the broken push was not noticed"
        time.sleep(0.05)
    assert "version 3" in error
    response = _recommend(url, helpers.make_user(helpers.users[6]))
    assert response.status_code == 200
    assert response.json()["versions"]["pair"] == 1
    assert 'lcron_reloads_total{outcome="failed"}' in httpx.get(f"{url}/metrics").text


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    pushed, start_service, direct, helpers
):
    url = start_service(pushed)
    users = [helpers.make_user(helpers.users[i], seq=helpers.known[: i % 4]) for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda u: _recommend(url, u, k=10), users))
    for user, response in zip(users, responses, strict=True):
        assert response.status_code == 200, response.text
        helpers.assert_items_equal(response.json()["items"], direct.expected(1, user, 10))
    pair = start_service.apps[-1].state.registry.current
    (batcher,) = pair.cascade_batchers.values()  # one chain of cut-offs: K1 = 100
    sizes = batcher.batch_sizes
    assert max(sizes) > 1, sizes  # some batches served several requests at once
    assert sum(sizes) == len(users)  # each request ran in exactly one batch
