"""The curated schema of the list-wise raw examples (``data/schema.pbtxt``).

Every feature has a fixed shape (context [1], behaviour sequence [SEQ_LEN], candidates
[list_size]) and must be present in every example, so Transform parses them as
``FixedLenFeature``. Two environments: TRAINING (everything) and SERVING, where the label-like
features (``models.features.LEAKY_FEATURES``) are absent. ``data/schema.pbtxt`` is this module's
output for the default list size; regenerate it with::

    python -m components.recflow_example_gen.schema > data/schema.pbtxt
"""

from __future__ import annotations

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features

TRAINING, SERVING = "TRAINING", "SERVING"
# Value bounds ExampleValidator checks (stage codes with PAD_ID, 0/1 mask, graded labels).
_INT_DOMAINS = {
    features.STAGE: (features.PAD_ID, max(features.STAGE_CODES.values())),
    features.MASK: (0, 1),
}
_FLOAT_DOMAINS = {
    features.LABEL: (0.0, float(len(features.STAGE_CODES))),
    features.FEEDBACK_LABEL: (0.0, 1.0),
}


def build_schema(list_size: int = features.LIST_SIZE) -> schema_pb2.Schema:
    """The schema of examples written with ``list_size`` candidates."""
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
        if name in _INT_DOMAINS:
            feature.int_domain.min, feature.int_domain.max = _INT_DOMAINS[name]
        if name in _FLOAT_DOMAINS:
            feature.float_domain.min, feature.float_domain.max = _FLOAT_DOMAINS[name]
        if name in features.LEAKY_FEATURES:
            feature.not_in_environment.append(SERVING)
    return schema


def schema_text(list_size: int = features.LIST_SIZE) -> str:
    return text_format.MessageToString(build_schema(list_size))


if __name__ == "__main__":
    print(schema_text(), end="")
