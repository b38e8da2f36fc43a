"""The curated schema of the list-wise raw examples (``data/schema.pbtxt``).

Every feature has a fixed shape (context [1], behaviour sequence [SEQ_LEN], candidates
[list_size]) and must be present in every example, so Transform parses them as
``FixedLenFeature``. Two environments: TRAINING (everything) and SERVING, where the label-like
features (``models.features.LEAKY_FEATURES``) are absent. ``data/schema.pbtxt`` is this module's
output for the default list (40 candidates, four stage groups); regenerate it with::

    python -m components.recflow_example_gen.schema > data/schema.pbtxt

Another list shape (e.g. the three-stage setting: 50 candidates in five groups) has its own
schema: ``schema_file(list_size, num_groups, folder)`` writes it (the runners pass its path to
ImportSchemaGen), or ``python -m components.recflow_example_gen.schema 50 5``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features

TRAINING, SERVING = "TRAINING", "SERVING"
NUM_GROUPS = len(features.STAGE_CODES)  # the default list's stage groups
DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "data" / "schema.pbtxt"


def _domains(num_groups: int) -> tuple[dict, dict]:
    """Value bounds ExampleValidator checks: stage codes 0..num_groups-1 (and PAD_ID), the 0/1
    mask, graded labels in [0, num_groups] (the best group's code plus a bonus <= 1)."""
    ints = {features.STAGE: (features.PAD_ID, num_groups - 1), features.MASK: (0, 1)}
    floats = {features.LABEL: (0.0, float(num_groups)), features.FEEDBACK_LABEL: (0.0, 1.0)}
    return ints, floats


def build_schema(
    list_size: int = features.LIST_SIZE, num_groups: int = NUM_GROUPS
) -> schema_pb2.Schema:
    """The schema of examples written with ``list_size`` candidates in ``num_groups`` groups."""
    int_domains, float_domains = _domains(num_groups)
    schema = schema_pb2.Schema()
    schema.default_environment.extend([TRAINING, SERVING])
    shapes = {name: 1 for name in features.CONTEXT_FEATURES}
    shapes.update({name: features.SEQ_LEN for name in features.SEQUENCE_FEATURES})
    candidates = (
        *features.ITEM_FEATURES,
        features.STAGE,
        features.RANK_INDEX,
        features.LABEL,
        features.FEEDBACK_LABEL,
        features.MASK,
    )
    shapes.update({name: list_size for name in candidates})
    for name, size in shapes.items():
        feature = schema.feature.add(name=name)
        is_float = name in (features.LABEL, features.FEEDBACK_LABEL)
        feature.type = schema_pb2.FLOAT if is_float else schema_pb2.INT
        feature.shape.dim.add(size=size)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        if name in int_domains:
            feature.int_domain.min, feature.int_domain.max = int_domains[name]
        if name in float_domains:
            feature.float_domain.min, feature.float_domain.max = float_domains[name]
        if name in features.LEAKY_FEATURES:
            feature.not_in_environment.append(SERVING)
    return schema


def schema_text(list_size: int = features.LIST_SIZE, num_groups: int = NUM_GROUPS) -> str:
    return text_format.MessageToString(build_schema(list_size, num_groups))


def schema_file(list_size: int, num_groups: int, folder: str | Path) -> str:
    """Path of the curated schema for this list shape: ``data/schema.pbtxt`` for the default
    (40, 4), else a generated ``<folder>/schema_<list_size>x<num_groups>/schema.pbtxt``
    (ImportSchemaGen takes a file; the same content gives the same file, so caching holds)."""
    if (list_size, num_groups) == (features.LIST_SIZE, NUM_GROUPS):
        return str(DEFAULT_SCHEMA)
    path = Path(folder) / f"schema_{list_size}x{num_groups}" / "schema.pbtxt"
    text = schema_text(list_size, num_groups)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(schema_text(*args), end="")
