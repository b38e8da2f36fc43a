"""training.index and push.min_index_recall: validated when the configuration is built, and
handed to the Trainer (custom_config) and the CascadePusher (execution property)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config


def test_index_and_recall_floor_are_checked_when_the_configuration_is_built() -> None:
    config = load_config(None, ["training.index.kind=scann", "push.min_index_recall=0.97"])
    assert config.training.index == {"kind": "scann"}
    assert config.push.min_index_recall == 0.97
    with pytest.raises(ValueError, match="kind"):
        load_config(None, ["training.index.kind=annoy"])
    with pytest.raises(ValueError, match="num_leafs"):
        load_config(None, ["training.index.num_leafs=10"])
    with pytest.raises(ValueError, match="min_index_recall"):
        load_config(None, ["push.min_index_recall=1.5"])


@pytest.mark.slow
def test_index_reaches_the_trainer_and_the_floor_the_pusher(tmp_path: Path) -> None:
    from pipeline import local_runner

    config = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "training.index.kind=scann",
            "training.index.num_leaves_to_search=50",
            "push.min_index_recall=0.9",
        ],
    )
    pipeline = local_runner.build(config, "/data/logs")
    components = {c.id: c for c in pipeline.components}
    custom_config = json.loads(components["Trainer"].exec_properties["custom_config"])
    assert custom_config["index"] == {"kind": "scann", "num_leaves_to_search": 50}
    assert components["CascadePusher"].exec_properties["min_index_recall"] == 0.9
