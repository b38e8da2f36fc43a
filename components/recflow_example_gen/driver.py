"""Driver of RecFlowExampleGen: fingerprints the input files so TFX's cache sees new data.

TFX caches a component run by its inputs and execution properties. An ExampleGen has no input
artifacts, so, like the stock file-based driver, this driver adds an ``input_fingerprint`` (count,
bytes and modification times of every matched file) to the execution properties before the cache
is checked: new or changed log files re-run the ingestion, unchanged ones hit the cache. Unlike
the stock driver it understands split patterns with several comma-separated globs.
"""

from __future__ import annotations

from typing import Any

from tfx.components.example_gen import driver, utils
from tfx.dsl.components.base import base_driver
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.recflow_example_gen.beam_pipeline import SPLIT_PATTERN_SEPARATOR


class RecFlowDriver(driver.Driver):
    """Resolves span 0 / no version and fingerprints every glob of every split."""

    def resolve_exec_properties(
        self, exec_properties: dict[str, Any], pipeline_info: Any, component_info: Any
    ) -> dict[str, Any]:
        del pipeline_info, component_info
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        parts = []
        for split in input_config.splits:
            for glob in split.pattern.split(SPLIT_PATTERN_SEPARATOR):
                pattern = f"{input_base.rstrip('/')}/{glob.strip()}"
                parts.append(io_utils.generate_fingerprint(split.name, pattern))
        exec_properties[utils.SPAN_PROPERTY_NAME] = 0
        exec_properties[utils.VERSION_PROPERTY_NAME] = None
        exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = "\n".join(parts)
        return exec_properties

    def _prepare_output_artifacts(
        self,
        input_artifacts: dict[str, list[Any]],
        output_dict: dict[str, Any],
        exec_properties: dict[str, Any],
        execution_id: int,
        pipeline_info: Any,
        component_info: Any,
    ) -> dict[str, list[Any]]:
        # Legacy launchers (InteractiveContext) call this: the stock ExampleGen driver prepares
        # only ``examples``; the dead letters and the counts need their artifacts too.
        args = (exec_properties, execution_id, pipeline_info, component_info)
        result = super()._prepare_output_artifacts(input_artifacts, output_dict, *args)
        others = {k: v for k, v in output_dict.items() if k not in result}
        result.update(
            base_driver.BaseDriver._prepare_output_artifacts(self, input_artifacts, others, *args)
        )
        return result
