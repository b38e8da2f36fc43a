"""Fixtures of the serving tests: a pushed SavedModel pair, the service over HTTP, direct calls.

The SavedModels are the REAL export of short training runs (``train_cascade`` of the root
conftest: RecFlowExampleGen + Transform over a simulated log, then ``models.trainer``). Versions
1 and 2 are two different trained models (same data, different seeds), so a swap is
observable. ``export_pair`` is the one place that decides which SavedModels the tests serve; it
copies a trained export to ``<root>/{retrieval,ranking}/<version>/``. Everything else (pushing
with the pipeline's ``push_pair``, the service, TF Serving's test double, the expected values)
reads SavedModels from disk and does not care where they came from.

Request ids are raw ids of the simulated log: ``helpers.known`` are videos of the training
corpus (the items retrieval indexes and ranking looks up), ``helpers.unknown`` an id that is in
no training vocabulary (the out-of-vocabulary path).

Conftest modules are not importable under ``--import-mode=importlib``: tests get helpers
through fixtures.
"""

from __future__ import annotations

import functools
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from models import features

TRAIN_STEPS = 100  # a short training run per version
VERSION_SEEDS = {1: 1, 2: 2}  # pair version -> trainer seed: two different trained models
# Requests fall on the simulated log's eval day (tests/conftest.py: days 0-1 train, day 2 eval;
# the simulator's day 0 starts 2024-01-01 00:00 UTC): items' ages are those of the training data.
REQUEST_TIMESTAMP = 1_704_067_200_000 + 2 * 86_400_000 + 12 * 3_600_000
UNKNOWN = 999_999_937  # an id no simulated log has (ids there are array indices)


@pytest.fixture(scope="session")
def trained(train_cascade) -> dict[int, object]:
    """Pair version -> ``TrainedCascade`` of a short training run (its seed differs per version)."""
    return {
        version: train_cascade(steps=TRAIN_STEPS, seed=seed)
        for version, seed in VERSION_SEEDS.items()
    }


def export_pair(root: Path, version: int, trained_cascade) -> None:
    """Writes a (retrieval, ranking) SavedModel pair to ``<root>/<stage>/<version>/``.

    THE switch point of which SavedModels the tests serve (see module docstring): here the
    trainer's own export of ``trained_cascade`` (a ``models.trainer.TrainedCascade``).
    """
    for stage in ("retrieval", "ranking"):
        shutil.copytree(trained_cascade.export_dirs[stage], root / stage / str(version))


@pytest.fixture(scope="session")
def exports(tmp_path_factory, trained) -> Path:
    """Exported (unpublished) pairs of versions 1 and 2, different trained models."""
    root = tmp_path_factory.mktemp("exports")
    for version, trained_cascade in trained.items():
        export_pair(root, version, trained_cascade)
    return root


@pytest.fixture(scope="session")
def corpus(trained):
    """The item corpus known at training time (``models.data.ItemCorpus``), same for both
    versions (same training data)."""
    first, second = (trained[v].corpus for v in VERSION_SEEDS)
    np.testing.assert_array_equal(first.video_ids, second.video_ids)
    assert UNKNOWN not in set(first.video_ids.tolist())
    return first


@pytest.fixture(scope="session")
def logged_users(transformed_log) -> dict[int, dict]:
    """user id -> the demographics logged with the user's requests in the training split (the
    raw list-wise examples of the ingestion): users the trained vocabularies know."""
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(f"{transformed_log['examples']}/Split-train/*"))
    assert files, transformed_log["examples"]
    names = ("user_id", "device_id", "age", "gender", "province")
    users: dict[int, dict] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        row = {n: int(example.features.feature[n].int64_list.value[0]) for n in names}
        users.setdefault(row["user_id"], row)
    return users


def make_user(
    user_id: int,
    seq: list[int] | None = None,
    timestamp: int = REQUEST_TIMESTAMP,
    *,
    users: dict[int, dict],
    items: dict[int, tuple[int, int]],
) -> dict:
    """A request's user object.

    A logged user (``users``) comes with the demographics of the log; any other id is a new
    user (out-of-vocabulary user and device). ``seq`` is the list of past video ids; their
    authors and categories are the corpus's (``items``: video id -> (author, category level
    two)), for a video unknown at training time ids that no vocabulary has.
    """
    logged = users.get(user_id)
    user = {
        "user_id": user_id,
        "device_id": logged["device_id"] if logged else UNKNOWN,
        "age": logged["age"] if logged else user_id % 8,
        "gender": logged["gender"] if logged else user_id % 3,
        "province": logged["province"] if logged else user_id % 34,
        "request_timestamp": timestamp,
    }
    if seq is not None:
        user["seq_video_id"] = list(seq)
        user["seq_author_id"] = [items.get(v, (UNKNOWN, UNKNOWN))[0] for v in seq]
        user["seq_category_level_two"] = [items.get(v, (UNKNOWN, UNKNOWN))[1] for v in seq]
    return user


def push(exports: Path, serving_dir: Path, version: int) -> None:
    """Publishes an exported pair with the pipeline's pusher code (no fresh-process check)."""
    from components.cascade_pusher import pair_push

    export_dirs = {stage: exports / stage / str(version) for stage in pair_push.STAGES}
    pair_push.push_pair(export_dirs, serving_dir, {}, validate=False, version=version)


@pytest.fixture
def pushed(tmp_path, exports) -> Path:
    """A serving dir with version 1 pushed."""
    serving_dir = tmp_path / "serving"
    push(exports, serving_dir, 1)
    return serving_dir


class DirectModels:
    """The two SavedModels of a version called directly: the expected cascade output."""

    def __init__(self, model_root: Path) -> None:
        self.model_root = model_root
        self._loaded: dict[int, dict] = {}

    def signatures(self, version: int) -> dict:
        import tensorflow as tf

        if version not in self._loaded:
            self._loaded[version] = {
                stage: tf.saved_model.load(str(self.model_root / stage / str(version))).signatures[
                    "serving_default"
                ]
                for stage in ("retrieval", "ranking")
            }
        return self._loaded[version]

    def expected(self, version: int, user: dict, k: int, k1: int = 100) -> list[dict]:
        """Retrieval's top-k1, re-scored by ranking, best k; ties keep retrieval's order."""
        import tensorflow as tf

        sigs = self.signatures(version)
        query = {}
        for name in features.RETRIEVAL_QUERY_FEATURES:
            if name in features.SEQUENCE_FEATURES:
                values = user.get(name, [])
                row = values + [features.PAD_ID] * (features.SEQ_LEN - len(values))
                query[name] = tf.constant([row], tf.int64)
            else:
                query[name] = tf.constant([user[name]], tf.int64)
        retrieved = sigs["retrieval"](**query)
        ids = retrieved["video_id"].numpy()[:, :k1]
        rscores = retrieved["scores"].numpy()[0, :k1]
        ranked = sigs["ranking"](**query, video_id=tf.constant(ids))["scores"].numpy()[0]
        order = sorted(range(len(ranked)), key=lambda i: (-ranked[i], i))[:k]
        return [
            {
                "video_id": int(ids[0, i]),
                "retrieval_score": float(rscores[i]),
                "retrieval_rank": i + 1,
                "ranking_score": float(ranked[i]),
                "ranking_rank": r + 1,
            }
            for r, i in enumerate(order)
        ]


@pytest.fixture(scope="session")
def direct(exports) -> DirectModels:
    return DirectModels(exports)


def assert_items_equal(got: list[dict], want: list[dict]) -> None:
    assert [i["video_id"] for i in got] == [i["video_id"] for i in want]
    for g, w in zip(got, want, strict=True):
        assert np.isfinite([g["retrieval_score"], g["ranking_score"]]).all(), g
        assert g["retrieval_rank"] == w["retrieval_rank"]
        assert g["ranking_rank"] == w["ranking_rank"]
        # A batched call sums in another order than a lone one: float32 rounding, absolute ~1e-7
        # (a score near 0 is off by more than rtol alone allows).
        np.testing.assert_allclose(g["retrieval_score"], w["retrieval_score"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g["ranking_score"], w["ranking_score"], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="session")
def helpers(corpus, logged_users):
    """Helpers for test modules (conftest is not importable).

    ``users``: logged user ids (known to the trained models), ``known``: video ids of the
    training corpus, ``unknown``: an id no training vocabulary has (user or video).
    ``make_user(user_id, seq=None, timestamp=...)`` builds a request's user object.
    """
    assert len(logged_users) >= 30 and UNKNOWN not in logged_users
    items = dict(
        zip(
            corpus.video_ids.tolist(),
            zip(
                corpus.columns["author_id"].tolist(),
                corpus.columns["category_level_two"].tolist(),
                strict=True,
            ),
            strict=True,
        )
    )
    spread = np.linspace(0, len(corpus) - 1, 8).astype(int)
    return types.SimpleNamespace(
        push=push,
        make_user=functools.partial(make_user, users=logged_users, items=items),
        assert_items_equal=assert_items_equal,
        users=sorted(logged_users),
        known=corpus.video_ids[spread].tolist(),
        unknown=UNKNOWN,
    )


@pytest.fixture
def start_service():
    """``start_service(serving_dir, backend=None, **config)`` -> base URL of the cascade service
    (uvicorn on a free loopback port, in a thread); stopped at teardown."""
    from serving.app import ServiceConfig, create_app
    from serving.backends import InProcessBackend
    from serving.testing.http_thread import ThreadedServer

    servers = []

    def start(serving_dir: Path, backend=None, **config) -> str:
        config.setdefault("poll_interval_s", 0.1)
        config = ServiceConfig(serving_dir=serving_dir, **config)
        app = create_app(config, backend or InProcessBackend())
        servers.append(ThreadedServer(app).start())
        start.apps.append(app)
        return servers[-1].url

    start.apps = []  # the FastAPI apps started, for tests that look inside (app.state.registry)
    yield start
    for server in servers:
        server.stop()
