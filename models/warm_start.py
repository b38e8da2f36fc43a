"""Warm start of a cascade from the previous run's weights, across changing vocabularies.

Each day's Transform builds new vocabularies (new users and items appear, rare ones drop out),
so yesterday's embedding tables do not line up with today's rows. The Trainer saves its weights
with the vocabularies they were trained on (``save``); ``restore`` copies every weight whose
shape is unchanged, and remaps embedding tables of a vocabulary row by row through the id each
row stands for (padding and out-of-vocabulary rows keep their positions). Rows of ids new today
keep their fresh initialisation.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models import preprocessing

WEIGHTS_FILE = "weights.npz"
VOCABULARIES_FILE = "vocabularies.json"
# "<vocabulary>_embedding/" in a variable name says which vocabulary indexes its rows.
_TABLE = re.compile(r"(?:^|/)(?P<vocab>[a-z_]+?)_embedding/")
# Keras makes generated layer names unique per process ("dense_7/", "cascade_model_1/"): a model
# built after another one has other variable names, so ``_key`` drops those suffixes.
_UNIQUE_SUFFIX = re.compile(r"_\d+(?=/)")


def _vocabularies(tf_transform_output: Any) -> dict[str, list[str]]:
    out = {}
    for name, filename in preprocessing.VOCAB_FILENAMES.items():
        path = tf_transform_output.vocabulary_file_by_name(filename)
        out[name] = tf.io.gfile.GFile(path).read().splitlines()
    return out


def save(model: tf.keras.Model, tf_transform_output: Any, directory: str | Path) -> None:
    """Writes the model's weights (by variable name) and its vocabularies to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {_key(i, v): v.numpy() for i, v in enumerate(model.weights)}
    np.savez(directory / WEIGHTS_FILE, **weights)
    (directory / VOCABULARIES_FILE).write_text(json.dumps(_vocabularies(tf_transform_output)))


def _key(position: int, variable: tf.Variable) -> str:
    # Keras names need not be unique (two "dense/kernel:0"); the position in the model's weights
    # is, for the same architecture, and the name guards against a changed one.
    return f"{position:05d}|{_UNIQUE_SUFFIX.sub('', variable.name)}"


def _remap_rows(old: np.ndarray, new: np.ndarray, old_vocab: list[str], new_vocab: list[str]):
    """Copies rows of ``old`` into ``new`` by id; layout [pad, vocabulary..., oov buckets]."""
    out = new.copy()
    out[0] = old[0]
    old_index = {token: i + 1 for i, token in enumerate(old_vocab)}
    for i, token in enumerate(new_vocab):
        j = old_index.get(token)
        if j is not None:
            out[i + 1] = old[j]
    oov = preprocessing.NUM_OOV_BUCKETS
    out[len(new_vocab) + 1 : len(new_vocab) + 1 + oov] = old[len(old_vocab) + 1 :][:oov]
    return out


def restore(model: tf.keras.Model, tf_transform_output: Any, directory: str | Path) -> dict:
    """Loads what ``save`` wrote into a built ``model``; returns counts of what it did."""
    directory = Path(directory)
    old = np.load(directory / WEIGHTS_FILE)
    old_vocabs = json.loads((directory / VOCABULARIES_FILE).read_text())
    new_vocabs = _vocabularies(tf_transform_output)
    counts = {"copied": 0, "remapped": 0, "missing": 0, "skipped": 0}
    for position, variable in enumerate(model.weights):
        key = _key(position, variable)
        if key not in old.files:
            counts["missing"] += 1
            continue
        value = old[key]
        match = _TABLE.search(variable.name)
        vocab = match.group("vocab") if match else None
        if vocab in new_vocabs and vocab in old_vocabs:
            variable.assign(
                _remap_rows(value, variable.numpy(), old_vocabs[vocab], new_vocabs[vocab])
            )
            counts["remapped"] += 1
        elif tuple(value.shape) == tuple(variable.shape):
            variable.assign(value)
            counts["copied"] += 1
        else:
            counts["skipped"] += 1
    logging.info("warm start from %s: %s", directory, counts)
    return counts
