"""ExampleValidator anomalies stop the run before Transform (unless data.stop_on_anomalies=false).

The wiring is create_pipeline's; the run is a LocalDagRunner pipeline over the shared session's
real raw examples (40 candidates per request) checked against a schema that expects 20: the
StatisticsGen -> ExampleValidator -> Transform part of the pipeline, nothing else re-run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]


def _components(pipeline) -> dict:
    return {c.id: c for c in pipeline.components}


@pytest.mark.parametrize("stop", [True, False])
def test_create_pipeline_orders_transform_after_a_strict_validator(stop: bool, tmp_path) -> None:
    from tfx import v1 as tfx

    from components.example_validation.component import StrictExampleValidator
    from pipeline import local_runner
    from pipeline.config import load_config

    overrides = [f"output_dir={tmp_path}", f"data.stop_on_anomalies={json.dumps(stop)}"]
    config = load_config(None, overrides)
    assert config.data.stop_on_anomalies is stop
    components = _components(local_runner.build(config, str(tmp_path / "logs")))
    validator, transform = components["ExampleValidator"], components["Transform"]
    assert isinstance(validator, StrictExampleValidator) is stop
    assert isinstance(validator, tfx.components.ExampleValidator)
    assert (validator in transform.upstream_nodes) is stop


def test_anomalies_fail_the_validator_and_transform_never_runs(transformed_log, tmp_path) -> None:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    from components.example_validation.component import StrictExampleValidator
    from components.recflow_example_gen.schema import schema_text
    from models.code_version import code_version

    schema_file = tmp_path / "schema" / "schema.pbtxt"
    schema_file.parent.mkdir()
    schema_file.write_text(schema_text(list_size=20))  # the examples hold 40 candidates
    examples = tfx.dsl.Importer(
        source_uri=transformed_log["examples"],
        artifact_type=tfx.types.standard_artifacts.Examples,
        properties={"split_names": '["train", "eval"]'},
        custom_properties={"file_format": "tfrecords_gzip", "payload_format": "FORMAT_TF_EXAMPLE"},
    ).with_id("Examples")
    statistics = tfx.components.StatisticsGen(examples=examples.outputs["result"])
    schema = tfx.components.ImportSchemaGen(schema_file=str(schema_file))
    validator = StrictExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    ).with_id("ExampleValidator")
    transform = tfx.components.Transform(
        examples=examples.outputs["result"],
        schema=schema.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_version": code_version()},
    ).with_id("Transform")
    transform.add_upstream_node(validator)
    metadata = tmp_path / "metadata.sqlite"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="anomalies",
        pipeline_root=str(tmp_path / "root"),
        components=[examples, statistics, schema, validator, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(metadata)
        ),
        beam_pipeline_args=["--direct_running_mode=in_memory"],
        enable_cache=False,
    )
    with pytest.raises(Exception, match="break the curated schema") as raised:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    message = str(raised.value)
    assert "split 'eval'" in message and "split 'train'" in message
    assert "'video_id'" in message and "stop_on_anomalies=false" in message

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata)
    store = metadata_store.MetadataStore(config)
    states = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[-1]
        states[node] = [
            metadata_store_pb2.Execution.State.Name(e.last_known_state)
            for e in store.get_executions_by_context(context.id)
        ]
    assert states.get("Transform", []) == [], states
    assert states["StatisticsGen"] == ["COMPLETE"]
    assert states["ExampleValidator"] == ["FAILED"]
    # The anomalies are on disk for the user to read (TFX deleted the failed run's outputs).
    kept = list(Path(tmp_path / "root" / "ExampleValidator").glob("anomalies/*_failed_run"))
    assert len(kept) == 1 and str(kept[0]) in message
    assert (kept[0] / "Split-eval" / "SchemaDiff.pb").stat().st_size > 0
