"""``lcron replay`` against a real pushed pair (the SavedModels of a short training run on the
simulated log of tests/conftest.py: days 0-1 train, day 2 eval), in a fresh process, and the
replay's answers equal the HTTP service's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import replay
from simulator import truth

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 60


@pytest.fixture(scope="module")
def cli_report(exports, helpers, transformed_log, tmp_path_factory) -> dict:
    """``lcron replay`` in a fresh process over version 1, pushed: (printed JSON, full report)."""
    tmp = tmp_path_factory.mktemp("replay_cli")
    serving = tmp / "serving"
    helpers.push(exports, serving, 1)
    out = tmp / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "replay",
            "--serving-dir",
            str(serving),
            "--sim-log",
            transformed_log["logs"],
            "--max-requests",
            str(REQUESTS),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :]), json.loads(out.read_text())


def test_lcron_replay_scores_the_pushed_pair(cli_report, transformed_log, corpus):
    printed, full = cli_report
    assert printed["policies"]["served"]["recall"] == full["policies"]["served"]["recall"]
    assert full["day"] == 2 and full["train_days"] == [0, 1] and full["version"] == 1
    assert full["requests"] == REQUESTS
    # The corpus the replay takes as exported is the one the Trainer exported.
    assert full["corpus_items"] == len(corpus)
    np.testing.assert_array_equal(
        truth.logged_items(transformed_log["logs"], [0, 1]), corpus.video_ids
    )
    served, policies = full["policies"]["served"], full["policies"]
    assert served["outside_corpus"] == 0 and served["short_answers"] == 0
    for name in ("served", "production", "random", "corpus_oracle"):
        values = policies[name]["per_request"]["recall"]
        assert len(values) == REQUESTS and all(0.0 <= v <= 1.0 for v in values), name
    # Per stage: the answer is a subset of retrieval's top k1, so retrieval holds at least as
    # many of the true best items; the pair stays under the corpus ceiling, above random.
    per_request = served["per_request"]
    assert all(
        r <= s + 1e-12
        for r, s in zip(per_request["recall"], per_request["retrieval_recall"], strict=True)
    )
    ceiling = policies["corpus_oracle"]
    assert served["recall"] <= ceiling["recall"] and served["ndcg"] <= ceiling["ndcg"]
    assert served["ndcg"] > policies["random"]["ndcg"]
    assert policies["production"]["ndcg"] > policies["random"]["ndcg"]
    assert "served cascade" in replay.format_report(full)


def test_replay_answers_are_the_http_services(pushed, transformed_log, start_service):
    import httpx

    day = truth.load_day(transformed_log["logs"], 2)
    requests = day.requests.take(np.arange(0, len(day.requests), 37)[:6])
    top_k, retrieved, version = replay.serve_requests(pushed, requests, k=10, k1=100)
    assert version == 1 and retrieved.shape == (len(requests), 100)
    url = start_service(pushed)
    ctx = requests.context
    for i in range(len(requests)):
        user = {
            name: int(ctx[name][i])
            for name in ("user_id", "device_id", "age", "gender", "province", "request_timestamp")
        }
        for name in requests.sequences:
            if requests.sequence_length[i]:
                user[name] = requests.sequence(name, i)
        response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}, timeout=60)
        assert response.status_code == 200, response.text
        items = [item["video_id"] for item in response.json()["items"]]
        assert items == top_k[i].tolist(), i


def test_an_experiment_cell_replays_its_pair_as_lcron_replay_does(
    cli_report, trained, transformed_log
):
    # The experiment hook exports the in-memory model of version 1 itself, pushes it to a
    # temporary serving dir and replays the same day: the same answers, the same figures.
    import tensorflow_transform as tft

    from experiments.config import ExperimentConfig
    from experiments.runner import replay_cell
    from models.config import LossConfig, MetricConfig, ModelConfig, TrainerConfig
    from models.trainer import Hyperparameters

    _, full = cli_report
    config = ExperimentConfig(simulate_days=3, eval_days=(2,), replay={"max_requests": REQUESTS})
    hp = Hyperparameters(LossConfig(), MetricConfig(), ModelConfig(), TrainerConfig())
    examples = transformed_log["transformed_examples"]
    row = replay_cell(
        config,
        hp,
        trained[1].model,
        tft.TFTransformOutput(transformed_log["transform_graph"]),
        f"{examples}/Split-train/*",
        2,
        Path(transformed_log["logs"]),
    )
    expected = replay.summary_row(full)
    assert set(row) == set(expected)
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-9), name
