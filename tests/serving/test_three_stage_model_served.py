"""A REAL three-stage cascade (``ModelConfig.stages``: two-tower retrieval, MLP pre-ranking, DIN
ranking) from training to the service: ``models.trainer`` trains and exports every stage
(``export_cascade`` + ``cascade.json``), the CascadePusher executor pushes the Model artifact
(hand-built artifacts; fresh-process validation), the service answers through the chain.

A short run (20 steps) on the session's transformed log; its lists hold 40 candidates, so the
keeps are scaled to fit (36, 24, 12).
"""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow

STAGES = [
    {"name": "retrieval", "kind": "two_tower", "keep": 36, "role": "retrieval"},
    {"name": "prerank", "kind": "mlp", "keep": 24, "role": "rescore"},
    {"name": "ranking", "kind": "din", "keep": 12, "role": "rescore"},
]
NAMES = [s["name"] for s in STAGES]


def test_a_trained_three_stage_model_is_pushed_and_served(
    transformed_log, tmp_path, start_service, helpers
):
    from tfx.components.trainer.fn_args_utils import FnArgs
    from tfx.types import standard_artifacts

    from components.cascade_pusher.executor import Executor
    from models import trainer

    examples = transformed_log["transformed_examples"]
    out = tmp_path / "model"
    fn_args = FnArgs(
        train_files=[f"{examples}/Split-train/*"],
        eval_files=[f"{examples}/Split-eval/*"],
        transform_output=transformed_log["transform_graph"],
        serving_model_dir=str(out / "Format-Serving"),
        model_run_dir=str(out / "model_run"),
        custom_config={
            "model": {"stages": STAGES},
            "loss": {"method": "lcron"},
            "trainer": {"train_steps": 20, "steps_per_epoch": 10, "batch_size": 32, "seed": 0},
        },
    )
    trained = trainer.train_and_export(fn_args)
    assert list(trained.export_dirs) == NAMES
    exported = json.loads((out / "Format-Serving" / "cascade.json").read_text())["stages"]
    assert [(s["name"], s["role"], s["keep"], s["kind"]) for s in exported] == [
        (s["name"], s["role"], s["keep"], s["kind"]) for s in STAGES
    ]

    model = standard_artifacts.Model()
    model.uri = str(out)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", 1)
    raw = standard_artifacts.Examples()
    raw.uri = transformed_log["examples"]
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_model")
    serving = tmp_path / "serving"
    Executor().Do(
        {"model": [model], "model_blessing": [blessing], "examples": [raw]},
        {"pushed_model": [pushed]},
        {
            "serving_dir": str(serving),
            "eval_split": "eval",
            "warmup_requests": 4,
            "min_index_recall": 0.95,
        },
    )
    version = pushed.get_int_custom_property("pushed_version")
    config = (serving / "models.config").read_text()
    assert [line.split('"')[1] for line in config.splitlines() if "name:" in line] == NAMES
    assert config.count(f"versions: {version}") == 3

    url = start_service(serving)
    user = helpers.make_user(helpers.users[0], seq=helpers.known[:3])
    response = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["versions"] == {"pair": version, **{name: version for name in NAMES}}
    items = body["items"]
    assert len(items) == 10
    assert list(items[0]) == [
        "video_id",
        *(f"{name}_{field}" for name in NAMES for field in ("score", "rank")),
    ]
    # The last stage ranks prerank's 24: every answer is in prerank's kept list, best first.
    assert all(1 <= item["prerank_rank"] <= 24 for item in items)
    assert [item["ranking_rank"] for item in items] == list(range(1, 11))
    scores = [item["ranking_score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    timing = [entry.split(";")[0] for entry in response.headers["Server-Timing"].split(", ")]
    assert timing == ["queue", *NAMES, "total", "batch"]
    too_many = httpx.post(f"{url}/v1/recommend", json={"user": user, "k": 25}, timeout=60)
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "k"
