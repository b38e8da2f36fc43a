"""Runs a method comparison cell by cell, resumable: a finished cell is never redone.

Layout under the output folder:

    logs/                         the simulated log (written once; absent with data.input_base)
    days/day_<t>/                 ingestion + Transform of the split for evaluation day t
    cells/<variant>__seed<s>__day<t>.json   one finished cell: its eval metrics
    results.json, results.md, recall_by_{method,day,stage}.png   (``report``)

A cell's file is written last and atomically, so an interrupted run resumes at the first
unfinished cell.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from experiments.config import ExperimentConfig, Variant
from models.config import TrainerConfig
from pipeline.console import say


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def cell_path(out: Path, variant: str, seed: int, day: int) -> Path:
    return out / "cells" / f"{variant}__seed{seed}__day{day}.json"


def prepare_log(config: ExperimentConfig, out: Path) -> Path:
    """The user's log folder (``data.input_base``), or the simulated log, simulated once (a
    resumed run with the same settings reuses it)."""
    data = config.data_config()
    if data.input_base:
        if "://" not in data.input_base and not Path(data.input_base).is_dir():
            raise FileNotFoundError(f"data.input_base: no folder {data.input_base}")
        return Path(data.input_base)
    from simulator import simulate_once

    logs = out / "logs"
    simulate_once(
        data.simulator_config(),
        logs,
        days=config.simulate_days,
        requests_per_day=config.simulate_requests_per_day,
        seed=config.simulate_seed,
        fmt=data.format,
        progress=True,
    )
    return logs


def count_examples(file_pattern: str) -> int:
    """Requests (one tf.Example each) in Transform's GZIP TFRecord output."""
    import tensorflow as tf

    files = tf.io.gfile.glob(file_pattern)
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(0, lambda count, _: count + 1).numpy())


def prepare_day(config: ExperimentConfig, logs: Path, out: Path, day: int) -> dict[str, Any]:
    """Ingestion + Transform of (train window, day), with the training requests counted;
    reused when already done."""
    from pipeline.ingest_and_transform import ingest_and_transform

    folder = out / "days" / f"day_{day}"
    done = folder / "artifacts.json"
    if done.exists():
        return json.loads(done.read_text())
    artifacts: dict[str, Any] = ingest_and_transform(
        logs, folder, config.train_days(day), [day], data=config.data_config()
    )
    train = count_examples(f"{artifacts['transformed_examples']}/Split-train/*")
    if train == 0:
        raise RuntimeError(f"day {day}: the training days {config.train_days(day)} hold no request")
    artifacts["train_requests"] = train
    _write_json(done, artifacts)
    return artifacts


def trainer_config(
    config: ExperimentConfig, seed: int, train_requests: int | None
) -> dict[str, Any]:
    """The cell's ``TrainerConfig`` fields: the experiment's, its seed, and with ``passes`` the
    steps of that many passes over the training requests (full batches, as the authors')."""
    fields = {**config.trainer, "seed": seed}
    if config.passes is not None:
        if not train_requests:
            raise ValueError("passes needs the number of training requests")
        batch = TrainerConfig.from_dict(fields).batch_size
        steps = max(1, int(config.passes * train_requests) // batch)
        fields.update(train_steps=steps, steps_per_epoch=steps)
    return fields


def run_cell(
    config: ExperimentConfig,
    variant: Variant,
    seed: int,
    artifacts: dict[str, str],
    *,
    day: int | None = None,
    logs: Path | None = None,
) -> dict[str, float]:
    """Trains one variant with one seed on the day's train split; eval metrics of the day.

    With ``config.replay`` set, the trained pair is also exported and ``day`` of the simulated
    log in ``logs`` replayed against it (``replay_*`` metrics, ``experiments.replay``).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import data
    from models.config import MetricConfig, ModelConfig
    from models.trainer import Hyperparameters, fit

    tf.keras.backend.clear_session()
    trainer = TrainerConfig.from_dict(trainer_config(config, seed, artifacts.get("train_requests")))
    hp = Hyperparameters(
        loss=variant.loss_config(),
        metrics=MetricConfig(),
        model=ModelConfig.from_dict(config.model),
        trainer=trainer,
    )
    tft_output = tft.TFTransformOutput(artifacts["transform_graph"])
    examples = artifacts["transformed_examples"]
    train_files, eval_files = f"{examples}/Split-train/*", f"{examples}/Split-eval/*"
    model, _ = fit(hp, tft_output, train_files, eval_files, validate_each_epoch=False, verbose=0)
    eval_ds = data.input_fn(eval_files, tft_output, trainer.batch_size, shuffle=False, repeat=False)
    results = model.evaluate(eval_ds, return_dict=True, verbose=0)
    metrics = {"train_steps": trainer.train_steps, **{k: float(v) for k, v in results.items()}}
    if config.replay is not None:
        if day is None or logs is None:
            raise ValueError("run_cell: the replay needs the evaluation day and the log folder")
        started = time.monotonic()
        metrics.update(replay_cell(config, hp, model, tft_output, train_files, day, logs))
        metrics["seconds_replay"] = time.monotonic() - started
    return metrics


def replay_cell(
    config: ExperimentConfig,
    hp: Any,
    model: Any,
    tft_output: Any,
    train_files: str,
    day: int,
    logs: Path,
) -> dict[str, float]:
    """Exports the trained pair as the Trainer does (same corpus, top-K and index; no index
    recall check), pushes it to a temporary serving dir and replays ``day`` of the simulated log
    against it; the ``replay_*`` figures."""
    import shutil
    import tempfile

    from experiments import replay
    from experiments.config import ReplayConfig
    from models import data, exporter, stage_spec
    from serving import manifest

    replay_config = ReplayConfig.from_dict(
        {**(config.replay or {}), "day": day, "train_days": config.train_days(day)}
    )
    corpus = data.item_corpus(train_files, tft_output)
    tmp = Path(tempfile.mkdtemp(prefix="replay_"))
    try:
        exported = exporter.export_cascade(  # every stage of the model, in cascade order
            model, tft_output, corpus, tmp / "export", hp.model.top_k, index=hp.index
        )
        serving = tmp / "serving"
        for stage, path in exported.items():
            target = manifest.stage_dir(serving, stage, 1)
            target.parent.mkdir(parents=True)
            path.rename(target)
        manifest.write_manifest(serving, 1, stages=stage_spec.read_export_spec(tmp / "export"))
        report = replay.replay(serving, logs, replay_config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return replay.summary_row(report)


def _run_and_record(
    config: ExperimentConfig,
    variant: Variant,
    seed: int,
    day: int,
    artifacts: dict,
    out: Path,
    logs: Path,
) -> tuple[dict[str, float], float]:
    started = time.monotonic()
    metrics = run_cell(config, variant, seed, artifacts, day=day, logs=logs)
    seconds = time.monotonic() - started
    payload = {"variant": variant.name, "seed": seed, "day": day, "seconds": seconds, **metrics}
    _write_json(cell_path(out, variant.name, seed, day), payload)
    return metrics, seconds


def run_experiment(config: ExperimentConfig, out: str | Path, workers: int = 1) -> dict[str, Any]:
    """Runs every unfinished cell, then writes the report; returns the results.

    Args:
      config: what to compare.
      out: output folder; a second call with the same folder resumes.
      workers: cells trained at once, each in its own process (TensorFlow and the Keras
        session are per process; a cell's result does not depend on the worker count).
    """
    from experiments import report

    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", config.to_dict())
    logs = prepare_log(config, out)
    if config.replay is not None:
        from simulator.truth import read_manifest

        read_manifest(logs)  # the replay needs a simulated log: fail before any training
    cells = [
        (variant, seed, day)
        for day in config.eval_days
        for seed in config.seeds
        for variant in config.variants
    ]
    todo = []
    for number, (variant, seed, day) in enumerate(cells, start=1):
        label = f"[{number}/{len(cells)}] {variant.name} seed {seed} day {day}"
        if cell_path(out, variant.name, seed, day).exists():
            say(f"{label}: done earlier, skipped")
        else:
            todo.append((label, variant, seed, day))
    # Ingestion + Transform once per evaluation day, before any training.
    artifacts = {day: prepare_day(config, logs, out, day) for day in {c[3] for c in todo}}
    started = time.monotonic()

    def report_cell(label: str, metrics: dict[str, float], seconds: float) -> None:
        elapsed = (time.monotonic() - started) / 60
        say(
            f"{label}: end-to-end recall {metrics[report.headline(config)]:.4f}"
            f" ({seconds:.0f} s; {elapsed:.1f} min so far)"
        )

    if workers <= 1:
        for label, variant, seed, day in todo:
            report_cell(
                label, *_run_and_record(config, variant, seed, day, artifacts[day], out, logs)
            )
    elif todo:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no TensorFlow state forked
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(
                    _run_and_record, config, variant, seed, day, artifacts[day], out, logs
                ): label
                for label, variant, seed, day in todo
            }
            for future in as_completed(futures):
                report_cell(futures[future], *future.result())
    return report.write_report(config, out)
