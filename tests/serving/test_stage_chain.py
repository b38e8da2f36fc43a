"""N-stage cascade description (no TensorFlow): stage specs, the manifest at N=2 and N=3, the
format-1 manifest of existing deployments, models.config, the chain's cut-offs and ordering."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from models import stage_spec
from models.stage_spec import StageSpec
from serving import manifest
from serving.app import encode_items
from serving.backends import ModelChain
from serving.cli import parse_keep

THREE = (
    StageSpec("retrieval", "retrieval", keep=40, kind="two_tower"),
    StageSpec("prerank", "rescore", keep=30, kind="mlp"),
    StageSpec("ranking", "rescore", keep=20, kind="din"),
)


def _fake_saved_model(serving_dir, stage, version):
    path = serving_dir / stage / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")


def test_stage_spec_validates_names_roles_and_chain():
    assert stage_spec.check_chain(THREE) == THREE
    with pytest.raises(ValueError, match="name"):
        StageSpec("Pre-Rank", "rescore")
    with pytest.raises(ValueError, match="reserved"):
        StageSpec("total", "rescore")
    with pytest.raises(ValueError, match="role"):
        StageSpec("prerank", "ranking")
    with pytest.raises(ValueError, match="keep"):
        StageSpec("prerank", "rescore", keep=0)
    with pytest.raises(ValueError, match="first stage must be the retrieval"):
        stage_spec.check_chain([THREE[1], THREE[0], THREE[2]])
    with pytest.raises(ValueError, match="appears twice"):
        stage_spec.check_chain([THREE[0], THREE[1], THREE[1]])
    with pytest.raises(ValueError, match="at least 2"):
        stage_spec.check_chain(THREE[:1])


def test_model_stages_from_stage_configs_or_the_two_stage_default():
    class Config:  # the model engineer's StageConfig shape: any object with these attributes
        def __init__(self, name, kind, keep, role):
            self.name, self.kind, self.keep, self.role = name, kind, keep, role

    class ThreeStage:
        stage_configs = tuple(Config(s.name, s.kind, s.keep, s.role) for s in THREE)
        stage_layers = {s.name: object() for s in THREE}

    class TwoStage:
        retrieval, ranking = object(), object()

    assert stage_spec.from_model(ThreeStage()) == THREE
    assert list(stage_spec.stage_layers(ThreeStage(), THREE)) == ["retrieval", "prerank", "ranking"]
    assert stage_spec.from_model(TwoStage()) == stage_spec.DEFAULT_STAGES
    assert [s.keep for s in stage_spec.DEFAULT_STAGES] == [30, 20]
    layers = stage_spec.stage_layers(TwoStage(), stage_spec.DEFAULT_STAGES)
    assert layers == {"retrieval": TwoStage.retrieval, "ranking": TwoStage.ranking}


def test_export_spec_round_trip_and_stage_dirs(tmp_path):
    root = tmp_path / "model" / "Format-Serving"
    for spec in THREE:
        (root / spec.name).mkdir(parents=True)
        (root / spec.name / "saved_model.pb").write_bytes(b"")
    stage_spec.write_export_spec(root, THREE)
    stages, dirs = stage_spec.export_stage_dirs(tmp_path / "model")
    assert stages == THREE
    assert list(dirs) == ["retrieval", "prerank", "ranking"]
    (root / "cascade.json").unlink()  # an export from before N stages: the two-stage default
    stages, dirs = stage_spec.export_stage_dirs(tmp_path / "model")
    assert stages == stage_spec.DEFAULT_STAGES and list(dirs) == ["retrieval", "ranking"]
    (root / "cascade.json").write_text(json.dumps({"stages": [{"name": "ranking"}]}))
    with pytest.raises(ValueError, match="cascade.json"):
        stage_spec.export_stage_dirs(tmp_path / "model")


def test_manifest_names_three_ordered_stages(tmp_path):
    for spec in THREE:
        _fake_saved_model(tmp_path, spec.name, 7)
    manifest.write_manifest(tmp_path, 7, stages=THREE, stage_info={"retrieval": {"index": {}}})
    read = manifest.read_manifest(tmp_path)
    assert read["order"] == ["retrieval", "prerank", "ranking"]
    assert [(n, e["role"], e["keep"], e["position"]) for n, e in manifest.chain(read)] == [
        ("retrieval", "retrieval", 40, 0),
        ("prerank", "rescore", 30, 1),
        ("ranking", "rescore", 20, 2),
    ]
    assert read["stages"]["prerank"]["path"] == "prerank/7"
    # A 3-stage manifest is only written once the third stage is complete too.
    _fake_saved_model(tmp_path, "retrieval", 8)
    _fake_saved_model(tmp_path, "ranking", 8)
    with pytest.raises(FileNotFoundError, match="prerank"):
        manifest.write_manifest(tmp_path, 8, stages=THREE)
    assert manifest.read_manifest(tmp_path)["version"] == 7


def test_a_format_1_manifest_reads_as_the_two_stage_chain(tmp_path):
    """What deployments pushed before N stages hold: no format, no order."""
    legacy = {
        "version": 5,
        "stages": {s: {"model_name": s, "version": 5, "path": f"{s}/5"} for s in manifest.STAGES},
        "pushed_at": "2026-01-01T00:00:00+00:00",
    }
    (tmp_path / "manifest.json").write_text(json.dumps(legacy))
    read = manifest.read_manifest(tmp_path)
    assert read["order"] == ["retrieval", "ranking"]
    assert [e["role"] for _, e in manifest.chain(read)] == ["retrieval", "rescore"]


def test_manifest_order_errors_name_the_field(tmp_path):
    body = {
        "format": 2,
        "version": 3,
        "order": ["retrieval", "prerank", "ranking"],
        "stages": {
            s.name: {
                "model_name": s.name,
                "version": 3,
                "path": f"{s.name}/3",
                "position": i,
                "role": s.role,
                "keep": s.keep,
            }
            for i, s in enumerate(THREE)
        },
    }
    cases = [
        ({**body, "order": "retrieval"}, "order"),
        ({**body, "order": ["retrieval", "rerank", "ranking"]}, "stages.rerank"),
        ({**body, "order": ["prerank", "retrieval", "ranking"]}, "stages.prerank.position"),
        ({**body, "format": 3}, "format"),
    ]
    swapped = json.loads(json.dumps(body))
    swapped["stages"]["prerank"]["role"] = "retrieval"
    cases.append((swapped, "stages: cascade: stage 1"))
    for case, field in cases:
        (tmp_path / "manifest.json").write_text(json.dumps(case))
        with pytest.raises(manifest.ManifestError, match=field.replace(".", r"\.")):
            manifest.read_manifest(tmp_path)


def test_models_config_serves_all_three_stages(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = manifest.write_models_config(tmp_path, 9, stages=[s.name for s in THREE])
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    models = [c.name for c in config.model_config_list.config]
    assert models == ["retrieval", "prerank", "ranking"]
    for model in config.model_config_list.config:
        assert list(model.model_version_policy.specific.versions) == [9]


class _TableChain(ModelChain):
    """A chain whose stages score from fixed tables (video id -> score): checks the chain's
    cut-offs and order; the real SavedModels are in test_cascade_n_stages.py."""

    def __init__(self, tables, retrieved):
        super().__init__(7, {name: {"version": 7, "keep": keep} for name, keep, _ in tables})
        self.tables = {name: table for name, _, table in tables}
        self.retrieved = retrieved
        self.calls = []

    async def _predict(self, stage, inputs, output_names):
        self.calls.append((stage, inputs.get("video_id")))
        if stage == self.first:
            ids = np.asarray([self.retrieved])
            return {
                "video_id": ids,
                "scores": np.asarray([[self.tables[stage][v] for v in ids[0]]]),
            }
        ids = inputs["video_id"]
        return {"scores": np.asarray([[self.tables[stage][v] for v in ids[0]]], np.float32)}


def test_chain_middle_stage_keeps_its_k_and_the_last_orders_the_answer():
    ids = [10, 11, 12, 13, 14, 15]
    retrieval = dict(zip(ids, [6.0, 5, 4, 3, 2, 1], strict=True))
    prerank = dict(zip(ids, [0.0, 9, 1, 9, 5, 7], strict=True))  # a tie at 9: 11 before 13
    ranking = dict(zip(ids, [1.0, 2, 3, 4, 5, 6], strict=True))
    chain = _TableChain(
        [("retrieval", 5, retrieval), ("prerank", 3, prerank), ("ranking", 2, ranking)], ids
    )
    assert chain.cut_offs(5) == {"retrieval": 5, "prerank": 3, "ranking": None}
    assert chain.max_k(5) == 3 and chain.max_k(5, {"prerank": 4}) == 4
    with pytest.raises(ValueError, match="ranking"):
        chain.cut_offs(5, {"ranking": 3})  # the last stage's k is the request's

    result = asyncio.run(chain.cascade({}, k1=5))
    # Retrieval's top 5 (15 is cut), prerank keeps its best 3: 11, 13 (tie, retrieval's order),
    # then 14; ranking scores those three.
    assert [c[1].tolist() if c[1] is not None else None for c in chain.calls] == [
        None,
        [[10, 11, 12, 13, 14]],
        [[11, 13, 14]],
    ]
    assert result.video_id.tolist() == [11, 13, 14]
    assert result.retrieved.tolist() == [10, 11, 12, 13, 14]
    assert result.stage_ranks["retrieval"].tolist() == [2, 4, 5]
    assert result.stage_ranks["prerank"].tolist() == [1, 2, 3]
    assert set(result.timings_ms) == {"queue", "retrieval", "prerank", "ranking", "batch"}

    items = json.loads(encode_items(result, 2, chain))
    assert [i["video_id"] for i in items["items"]] == [14, 13]
    assert items["items"][0] == {
        "video_id": 14,
        "retrieval_score": 2.0,
        "retrieval_rank": 5,
        "prerank_score": 5.0,
        "prerank_rank": 3,
        "ranking_score": 5.0,
        "ranking_rank": 1,
    }
    assert items["versions"] == {"pair": 7, "retrieval": 7, "prerank": 7, "ranking": 7}

    override = asyncio.run(chain.cascade({}, k1=5, keep={"prerank": 1}))
    assert override.video_id.tolist() == [11]


def test_parse_keep():
    assert parse_keep(["prerank=30", "rerank=5"]) == {"prerank": 30, "rerank": 5}
    for bad in (["prerank"], ["prerank=0"], ["prerank=x"], ["a=1", "a=2"]):
        with pytest.raises(ValueError):
            parse_keep(bad)
