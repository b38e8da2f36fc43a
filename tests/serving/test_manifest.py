"""Push manifest and TF Serving model config: atomic, complete pairs only, fields named."""

from __future__ import annotations

import json

import pytest

from serving import manifest


def _fake_saved_model(serving_dir, stage, version):
    path = serving_dir / stage / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")


def test_manifest_round_trip_names_the_pair(tmp_path):
    for stage in manifest.STAGES:
        _fake_saved_model(tmp_path, stage, 1700000000)
    path = manifest.write_manifest(tmp_path, 1700000000, metrics={"recall": 0.5})
    read = manifest.read_manifest(tmp_path)
    assert path == tmp_path / "manifest.json"
    assert read["version"] == 1700000000
    assert read["format"] == 2 and read["order"] == ["retrieval", "ranking"]
    assert read["stages"] == {
        s: {
            "model_name": s,
            "version": 1700000000,
            "path": f"{s}/1700000000",
            "position": position,
            "role": role,
            "keep": keep,
            "kind": kind,
        }
        for position, (s, role, keep, kind) in enumerate(
            [("retrieval", "retrieval", 30, "two_tower"), ("ranking", "rescore", 20, "din")]
        )
    }
    assert read["metrics"] == {"recall": 0.5}
    assert read["pushed_at"].endswith("+00:00")
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["manifest.json"]  # no tmp


def test_manifest_refuses_an_incomplete_pair_and_keeps_the_old_one(tmp_path):
    for stage in manifest.STAGES:
        _fake_saved_model(tmp_path, stage, 1)
    manifest.write_manifest(tmp_path, 1)
    _fake_saved_model(tmp_path, "retrieval", 2)  # ranking/2 missing
    (tmp_path / "ranking" / "2").mkdir(parents=True)  # present but without saved_model.pb
    with pytest.raises(FileNotFoundError, match="ranking"):
        manifest.write_manifest(tmp_path, 2)
    assert manifest.read_manifest(tmp_path)["version"] == 1


def test_read_manifest_errors_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError):
        manifest.read_manifest(tmp_path)
    good = {
        "version": 3,
        "stages": {s: {"model_name": s, "version": 3, "path": f"{s}/3"} for s in manifest.STAGES},
    }
    cases = [
        ({**good, "version": "3"}, "version"),
        ({**good, "stages": {"retrieval": good["stages"]["retrieval"]}}, "stages.ranking"),
        (
            {
                **good,
                "stages": {**good["stages"], "ranking": {"model_name": "ranking", "path": "x"}},
            },
            "stages.ranking.version",
        ),
        (
            {
                **good,
                "stages": {
                    **good["stages"],
                    "ranking": {**good["stages"]["ranking"], "version": 2},
                },
            },
            "stages.ranking.version",
        ),
    ]
    for body, field in cases:
        (tmp_path / "manifest.json").write_text(json.dumps(body))
        with pytest.raises(manifest.ManifestError, match=field.replace(".", r"\.")):
            manifest.read_manifest(tmp_path)


def test_models_config_pins_both_models_to_the_version(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = manifest.write_models_config(tmp_path, 42, base_path_in_container="/srv/models/")
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    models = {c.name: c for c in config.model_config_list.config}
    assert sorted(models) == ["ranking", "retrieval"]
    for name, model in models.items():
        assert model.base_path == f"/srv/models/{name}"
        assert model.model_platform == "tensorflow"
        assert list(model.model_version_policy.specific.versions) == [42]
