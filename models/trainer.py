"""TFX Trainer module: ``run_fn`` trains the cascade as one network and exports both stages.

``run_fn`` only orchestrates: hyperparameters come from ``custom_config`` (the dict forms of
``models.config``'s dataclasses), data from ``models.data``, the network from
``models.cascade_model``, the export from ``models.exporter``. Outputs in the Model artifact:

    <serving_model_dir>/retrieval/   SavedModel (docs/signatures.md)
    <serving_model_dir>/ranking/     SavedModel
    <serving_model_dir>/warm_start/  weights + vocabularies, for the next run's warm start
    <model_run_dir>/                 TensorBoard logs (every loss term and cascade metric)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import tensorflow as tf

from models import data, distribution, exporter, preprocessing, warm_start
from models.cascade_model import CascadeModel
from models.config import LossConfig, MetricConfig, ModelConfig, TrainerConfig

WARM_START_DIR = "warm_start"


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Everything ``run_fn`` reads from ``custom_config``."""

    loss: LossConfig
    metrics: MetricConfig
    model: ModelConfig
    trainer: TrainerConfig
    warm_start: bool = False

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> Hyperparameters:
        config = dict(custom_config or {})
        return cls(
            loss=LossConfig.from_dict(config.get("loss")),
            metrics=MetricConfig.from_dict(config.get("metrics")),
            model=ModelConfig.from_dict(config.get("model")),
            trainer=TrainerConfig.from_dict(config.get("trainer")),
            warm_start=bool(config.get("warm_start", False)),
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


def train_and_export(fn_args: Any) -> TrainedCascade:
    """Trains on ``fn_args.train_files``, evaluates on ``eval_files`` each epoch, exports.

    Args:
      fn_args: TFX ``FnArgs`` (train/eval files, transform output, serving/run dirs, steps,
        custom_config, base_model).
    """
    import tensorflow_transform as tft

    hp = Hyperparameters.from_custom_config(fn_args.custom_config)
    tc = hp.trainer
    tf.keras.utils.set_random_seed(tc.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    train_steps = int(fn_args.train_steps or tc.train_steps)
    steps_per_epoch = min(tc.steps_per_epoch, train_steps)
    epochs = max(1, train_steps // steps_per_epoch)

    train_ds = data.input_fn(
        fn_args.train_files,
        tft_output,
        tc.batch_size,
        shuffle=True,
        repeat=True,
        seed=tc.seed,
        shuffle_buffer=tc.shuffle_buffer,
    )
    eval_ds = data.input_fn(
        fn_args.eval_files, tft_output, tc.batch_size, shuffle=False, repeat=False
    )
    eval_steps = tc.eval_steps or fn_args.eval_steps or None

    strategy = distribution.strategy(tc.distribution)
    with strategy.scope():
        model = CascadeModel(
            preprocessing.vocabulary_sizes(tft_output),
            data.list_size(tft_output),
            model_config=hp.model,
            loss_config=hp.loss,
            metric_config=hp.metrics,
        )
        model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate))
        model(_first_batch(train_ds))  # build the variables before a warm start
    if hp.warm_start and fn_args.base_model:
        source = Path(fn_args.base_model) / WARM_START_DIR
        if source.exists():
            warm_start.restore(model, tft_output, source)
        else:
            logging.warning("warm start asked, but %s has no saved weights", fn_args.base_model)

    callbacks = [tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")]
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds,
        validation_steps=eval_steps,
        callbacks=callbacks,
        verbose=2,
    )
    corpus = data.item_corpus(fn_args.train_files, tft_output)
    export_dirs = exporter.export_stages(
        model.retrieval,
        model.ranking,
        tft_output,
        corpus,
        fn_args.serving_model_dir,
        top_k=hp.model.top_k,
    )
    warm_start.save(model, tft_output, Path(fn_args.serving_model_dir) / WARM_START_DIR)
    return TrainedCascade(model, dict(history.history), export_dirs, corpus)


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (``Trainer(run_fn="models.trainer.run_fn", ...)``)."""
    result = train_and_export(fn_args)
    final = {name: values[-1] for name, values in result.history.items()}
    logging.info("cascade trained: %s", final)
