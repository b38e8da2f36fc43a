"""TF Serving warmup requests built from real eval requests.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records) when
it loads a version, so the first user request does not pay for graph warm-up. We build them from
logged eval requests: the retrieval stage gets the request's user/context features, every
rescore stage (ranking, a pre-ranking stage, ...) the same plus the request's logged candidate
ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from models import features, stage_spec
from models.stage_spec import StageSpec


def request_inputs(serialized_example: bytes) -> dict[str, dict[str, np.ndarray]]:
    """Stage name -> raw serving inputs (batch of 1) for one list-wise tf.Example.

    Returns:
      {"retrieval": {query feature: [1] or [1, SEQ_LEN]},
       "ranking": {... same, plus "video_id": [1, valid candidates]}}.
    """
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized_example)
    feats = example.features.feature

    def ints(name: str) -> np.ndarray:
        if name not in feats:
            raise ValueError(f"warmup: example has no feature {name!r}")
        return np.asarray(feats[name].int64_list.value, dtype=np.int64)

    query: dict[str, np.ndarray] = {}
    for name in features.RETRIEVAL_QUERY_FEATURES:
        values = ints(name)
        query[name] = values.reshape(1, -1) if name in features.SEQUENCE_FEATURES else values[:1]
    mask = ints(features.MASK).astype(bool)
    candidates = ints("video_id")[mask].reshape(1, -1)
    return {"retrieval": dict(query), "ranking": {**query, "video_id": candidates}}


def prediction_log(model_name: str, inputs: dict[str, np.ndarray], signature: str) -> bytes:
    """One serialized ``PredictionLog`` holding a ``PredictRequest`` for ``model_name``."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
    )
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def warmup_records(
    serialized_examples: Iterable[bytes],
    limit: int = 32,
    stages: Sequence[StageSpec] | None = None,
) -> dict[str, list[bytes]]:
    """Stage name -> serialized warmup ``PredictionLog`` records from up to ``limit`` requests.

    Args:
      stages: the cascade (default: retrieval, ranking); each stage's requests are addressed
        to its model name, with the inputs of its role.
    """
    chain = stage_spec.check_chain(stages if stages is not None else stage_spec.DEFAULT_STAGES)
    records: dict[str, list[bytes]] = {s.name: [] for s in chain}
    for i, serialized in enumerate(serialized_examples):
        if i >= limit:
            break
        by_role = request_inputs(serialized)
        for spec in chain:
            inputs = by_role["retrieval" if spec.role == stage_spec.RETRIEVAL else "ranking"]
            records[spec.name].append(prediction_log(spec.name, inputs, "serving_default"))
    return records
