"""TFX Trainer module: ``run_fn`` trains the cascade as one network and exports both stages.

``run_fn`` only orchestrates: hyperparameters come from ``custom_config`` (the dict forms of
``models.config``'s dataclasses), data from ``models.data``, the network from
``models.cascade_model``, the export from ``models.exporter``. Outputs in the Model artifact:

    <serving_model_dir>/retrieval/   SavedModel (docs/signatures.md)
    <serving_model_dir>/ranking/     SavedModel
    <serving_model_dir>/warm_start/  weights + vocabularies, for the next run's warm start
    <model_run_dir>/                 TensorBoard logs (every loss term and cascade metric)
    <model_run_dir>/training_start.json   the first step's figures and what the warm start did
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import tensorflow as tf

from models import data, distribution, exporter, preprocessing, progress, warm_start
from models.cascade_model import CascadeModel
from models.config import (
    IndexConfig,
    LossConfig,
    MetricConfig,
    ModelConfig,
    TrainerConfig,
    check_cascade,
)

WARM_START_DIR = "warm_start"
TRAINING_START_FILE = "training_start.json"


class _TrainingStart(tf.keras.callbacks.Callback):
    """Writes the first training step's figures (computed before its update: loss terms and
    cascade metrics of the first batch) and the warm start's counts to
    ``<log_dir>/training_start.json``: a warm-started run starts from a lower ``l_e2e`` and a
    higher recall than a cold one, which is how a run shows that it did start from the blessed
    weights. (The total LCRON loss is not comparable across runs: its uncertainty weights are
    learned, and a warm start restores them too.)"""

    def __init__(self, path: Path, warm_start: dict[str, Any] | None) -> None:
        super().__init__()
        self._path = path
        self._warm_start = warm_start
        self._written = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._written or not logs or "loss" not in logs:
            return
        self._written = True
        record = {
            "first_step_loss": float(logs["loss"]),
            "first_step": {name: float(value) for name, value in logs.items()},
            "warm_start": self._warm_start,
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.write_text(json.dumps(record, indent=2))
        logging.info("training start: %s", record)


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Everything ``run_fn`` reads from ``custom_config``."""

    loss: LossConfig
    metrics: MetricConfig
    model: ModelConfig
    trainer: TrainerConfig
    warm_start: bool = False
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        # The stages (``ModelConfig.stages``) fix the loss's and the metrics' cut-offs: a
        # mismatch or a method without a form for this many stages fails here, before training.
        check_cascade(self.model, self.loss, self.metrics)

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> Hyperparameters:
        config = dict(custom_config or {})
        return cls(
            loss=LossConfig.from_dict(config.get("loss")),
            metrics=MetricConfig.from_dict(config.get("metrics")),
            model=ModelConfig.from_dict(config.get("model")),
            trainer=TrainerConfig.from_dict(config.get("trainer")),
            warm_start=bool(config.get("warm_start", False)),
            index=IndexConfig.from_dict(config.get("index")),
        )


@dataclasses.dataclass
class TrainedCascade:
    """What a training run produced: the in-memory model, its history and the exports."""

    model: CascadeModel
    history: dict[str, list[float]]
    export_dirs: dict[str, Path]
    corpus: data.ItemCorpus


def _first_batch(dataset: tf.data.Dataset) -> dict[str, tf.Tensor]:
    return next(iter(dataset.take(1)))


def fit(
    hp: Hyperparameters,
    tf_transform_output: Any,
    train_files: Any,
    eval_files: Any,
    *,
    train_steps: int | None = None,
    log_dir: str | None = None,
    base_model: str | None = None,
    validate_each_epoch: bool = True,
    verbose: int = 2,
) -> tuple[CascadeModel, dict[str, list[float]]]:
    """Builds the cascade under the configured tf.distribute strategy and trains it.

    Args:
      hp: the hyperparameters.
      tf_transform_output: ``tft.TFTransformOutput`` of the Transform run.
      train_files / eval_files: transformed examples (file patterns).
      train_steps: overrides ``hp.trainer.train_steps`` (TFX's TrainArgs.num_steps).
      log_dir: TensorBoard log folder (every loss term and cascade metric), or None.
      base_model: a previous run's ``serving_model_dir`` to warm start from when
        ``hp.warm_start``.
      validate_each_epoch: evaluate the eval split after every epoch (else never: callers
        evaluate themselves).
      verbose: Keras' fit verbosity (2: one line per epoch).

    Returns:
      The trained model and Keras' history (per epoch; eval figures prefixed ``val_``).
    """
    tc = hp.trainer
    # First: a multi-worker strategy configures collective ops, which TensorFlow refuses once
    # any op (the input pipeline below) has initialised its runtime.
    strategy = distribution.strategy(tc.distribution)
    tf.keras.utils.set_random_seed(tc.seed)
    train_steps = int(train_steps or tc.train_steps)
    steps_per_epoch = min(tc.steps_per_epoch, train_steps)
    epochs = max(1, train_steps // steps_per_epoch)
    train_ds = data.input_fn(
        train_files,
        tf_transform_output,
        tc.batch_size,
        shuffle=True,
        repeat=True,
        seed=tc.seed,
        shuffle_buffer=tc.shuffle_buffer,
    )
    vocabulary_sizes = preprocessing.vocabulary_sizes(tf_transform_output)
    item_log_q = None
    if hp.loss.corpus_weight > 0 and hp.loss.corpus_logq:
        item_log_q = data.item_sampling_log_q(
            train_files,
            tf_transform_output,
            vocabulary_sizes["video_id"],
            positives_only=hp.loss.corpus_negatives == "in_batch",
            gt_num=hp.loss.gt_num,
        )
    with strategy.scope():
        model = CascadeModel(
            vocabulary_sizes,
            data.list_size(tf_transform_output),
            model_config=hp.model,
            loss_config=hp.loss,
            metric_config=hp.metrics,
            item_log_q=item_log_q,
            train_metrics_every=tc.train_metrics_every,
        )
        model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate))
        if tc.distribution == "multi_worker_mirrored":
            # Keras' default ("auto") all-reduces each worker's metric results with a sum, but
            # they are already synchronised means: with two workers every figure came out
            # doubled (tests/models/test_multi_worker.py).
            model.distribute_reduction_method = "first"
        model(_first_batch(train_ds))  # build the variables before a warm start
    warm_started = None
    if hp.warm_start and base_model:
        source = Path(base_model) / WARM_START_DIR
        if source.exists():
            counts = warm_start.restore(model, tf_transform_output, source)
            warm_started = {"from": str(source), **counts}
        else:
            logging.warning("warm start asked, but %s has no saved weights", base_model)

    validation = {}
    if validate_each_epoch:
        validation = {
            "validation_data": data.input_fn(
                eval_files, tf_transform_output, tc.batch_size, shuffle=False, repeat=False
            ),
            "validation_steps": tc.eval_steps,
        }
    # Progress records for the console (pipeline.console); plain log lines elsewhere.
    callbacks = [progress.keras_callback(epochs * steps_per_epoch)]
    if log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
        callbacks.append(_TrainingStart(Path(log_dir) / TRAINING_START_FILE, warm_started))
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        **validation,
    )
    return model, dict(history.history)


def train_and_export(fn_args: Any) -> TrainedCascade:
    """Trains on ``fn_args.train_files``, evaluates on ``eval_files`` each epoch, exports.

    Args:
      fn_args: TFX ``FnArgs`` (train/eval files, transform output, serving/run dirs, steps,
        custom_config, base_model).
    """
    import tensorflow_transform as tft

    hp = Hyperparameters.from_custom_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model, history = fit(
        hp,
        tft_output,
        fn_args.train_files,
        fn_args.eval_files,
        train_steps=fn_args.train_steps,
        log_dir=fn_args.model_run_dir,
        base_model=fn_args.base_model,
    )
    corpus = data.item_corpus(fn_args.train_files, tft_output)
    export_dirs = exporter.export_cascade(  # every stage, in cascade order, + cascade.json
        model,
        tft_output,
        corpus,
        fn_args.serving_model_dir,
        top_k=hp.model.top_k,
        index=hp.index,
        recall_queries=recall_queries(model, hp, fn_args.eval_files, tft_output),
    )
    warm_start.save(model, tft_output, Path(fn_args.serving_model_dir) / WARM_START_DIR)
    return TrainedCascade(model, history, export_dirs, corpus)


def recall_queries(
    model: CascadeModel, hp: Hyperparameters, eval_files: Any, tft_output: Any
) -> Any:
    """Query embeddings of eval requests on which the export measures its index's recall."""
    if hp.index.recall_queries == 0:
        return None
    dataset = data.input_fn(
        eval_files, tft_output, hp.trainer.batch_size, shuffle=False, repeat=False
    )
    return exporter.query_embeddings(model.retrieval, dataset, hp.index.recall_queries)


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (``Trainer(run_fn="models.trainer.run_fn", ...)``)."""
    result = train_and_export(fn_args)
    final = {name: values[-1] for name, values in result.history.items()}
    logging.info("cascade trained: %s", final)
