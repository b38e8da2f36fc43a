"""Fresh-process check of staged stages: load each SavedModel, replay its warmup requests.

Run as ``python -m components.cascade_pusher.validate_pair --stage NAME DIR WARMUP_FILE ...``
(one ``--stage`` per stage of the cascade; the two-stage form ``--retrieval DIR
--retrieval-warmup F --ranking DIR --ranking-warmup F`` still works); exits non-zero, with the
reason on stderr, when a model fails to load, a request fails, or an output is not finite.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _replay(model_dir: str, warmup_file: str, stage: str) -> int:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving import custom_ops

    custom_ops.load_for(model_dir)  # e.g. ScaNN's ops, before the graph is read
    model = tf.saved_model.load(model_dir)
    replayed = 0
    for raw in tf.data.TFRecordDataset(warmup_file).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        signature = model.signatures[request.model_spec.signature_name or "serving_default"]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = signature(**inputs)
        for name, value in outputs.items():
            array = value.numpy()
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise ValueError(f"{stage}: output {name!r} is not finite")
        replayed += 1
    if replayed == 0:
        raise ValueError(f"{stage}: no warmup request to replay in {warmup_file}")
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--stage",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "DIR", "WARMUP"),
        help="a stage's name, SavedModel folder and warmup file (repeat per stage)",
    )
    for stage in ("retrieval", "ranking"):  # the two-stage form
        parser.add_argument(f"--{stage}")
        parser.add_argument(f"--{stage}-warmup")
    args = parser.parse_args(argv)
    stages = [tuple(s) for s in args.stage]
    for stage in ("retrieval", "ranking"):
        if getattr(args, stage):
            stages.append((stage, getattr(args, stage), getattr(args, f"{stage}_warmup")))
    if not stages:
        parser.error("no stage to validate: give --stage NAME DIR WARMUP")
    if any(warmup is None for _, _, warmup in stages):
        parser.error("every stage needs its warmup file")
    try:
        counts = {name: _replay(model_dir, warmup, name) for name, model_dir, warmup in stages}
    except Exception as err:  # report any failure as a failed validation, with its reason
        print(f"validation failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"validated: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
