"""Warm start across vocabularies: ``warm_start.save`` from a model trained on yesterday's
vocabularies, ``warm_start.restore`` into one built on today's (ids dropped, new, reordered).

The Transform output is a small duck-typed object over vocabulary files written here (one token
per line, most frequent first, as ``tft.vocabulary`` writes them): test data, not a mock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import features, preprocessing, warm_start
from models.cascade_model import CascadeModel

xf = features.transformed_name
LIST_SIZE = 6
OOV = preprocessing.NUM_OOV_BUCKETS


class VocabularyFiles:
    """The two methods of ``tft.TFTransformOutput`` that warm start and sizing read."""

    def __init__(self, directory: Path, vocabularies: dict[str, list[str]]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = {}
        for name, tokens in vocabularies.items():
            filename = preprocessing.VOCAB_FILENAMES[name]
            path = directory / filename
            path.write_text("".join(f"{t}\n" for t in tokens))
            self.paths[filename] = str(path)

    def vocabulary_file_by_name(self, filename: str) -> str:
        return self.paths[filename]

    def vocabulary_size_by_name(self, filename: str) -> int:
        return len(Path(self.paths[filename]).read_text().splitlines())


def _vocabularies(seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(yesterday, today) per vocabulary: today drops some ids, adds new ones, reorders.

    Sizes differ for some vocabularies and are equal for others, so that a table copied by
    position instead of by id would go unnoticed by a shape check.
    """
    rng = np.random.default_rng(seed)
    old, new = {}, {}
    for k, name in enumerate(preprocessing.VOCAB_FILENAMES):
        n_old = 12 + 3 * k
        ids = [str(1000 * (k + 1) + i) for i in range(n_old)]
        dropped = 4
        added = 4 if k % 2 == 0 else 7  # even: same size as yesterday; odd: larger
        kept = list(rng.permutation(ids[dropped:]))
        fresh = [str(1000 * (k + 1) + 500 + i) for i in range(added)]
        old[name] = ids
        new[name] = [str(t) for t in rng.permutation(kept + fresh)]
    return old, new


def _build(transform_output: VocabularyFiles, seed: int) -> CascadeModel:
    tf.keras.utils.set_random_seed(seed)
    sizes = preprocessing.vocabulary_sizes(transform_output)
    model = CascadeModel(sizes, LIST_SIZE)
    model(_inputs(sizes, seed))
    return model


def _inputs(sizes: dict[str, int], seed: int) -> dict[str, tf.Tensor]:
    """Transformed features of 2 requests (indices within ``sizes``, some padding)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("user_id", "device_id", "province"):
        out[xf(name)] = rng.integers(1, sizes[name], (2, 1))
    for name, size in features.SMALL_CATEGORICAL_SIZES.items():
        out[xf(name)] = rng.integers(0, size, (2, 1))
    out[xf(features.REQUEST_HOUR)] = np.array([[3.0], [17.0]], np.float32)
    out[xf(features.REQUEST_DAY_OF_WEEK)] = np.array([[0.0], [6.0]], np.float32)
    for name in ("video_id", "author_id", "category_level_one", "category_level_two"):
        out[xf(name)] = rng.integers(0, sizes[name], (2, LIST_SIZE))
    out[xf("upload_type")] = rng.integers(0, sizes["upload_type"], (2, LIST_SIZE))
    for name in (features.DURATION_LOG, features.UPLOAD_TIME, features.ITEM_AGE):
        out[xf(name)] = rng.normal(size=(2, LIST_SIZE)).astype(np.float32)
    for name, vocab in (
        ("seq_video_id", "video_id"),
        ("seq_author_id", "author_id"),
        ("seq_category_level_two", "category_level_two"),
    ):
        out[xf(name)] = rng.integers(0, sizes[vocab], (2, features.SEQ_LEN))
    out[xf(features.SEQ_MASK)] = (out[xf("seq_video_id")] > 0).astype(np.float32)
    out[xf(features.LABEL)] = rng.integers(0, 4, (2, LIST_SIZE)).astype(np.float32)
    out[xf(features.MASK)] = np.ones((2, LIST_SIZE), np.int64)
    return {name: tf.constant(value) for name, value in out.items()}


def _tables(model: tf.keras.Model) -> dict[int, str]:
    """id(variable) -> vocabulary, for every embedding table indexed by a vocabulary, found
    from the layers themselves (independently of warm_start's variable-name pattern)."""
    out = {}
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.Embedding) and layer.name.endswith("_embedding"):
            vocab = layer.name[: -len("_embedding")]
            if vocab in preprocessing.VOCAB_FILENAMES:
                out[id(layer.embeddings)] = vocab
    return out


@pytest.fixture(scope="module")
def warm_started(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm_start")
    old_vocabs, new_vocabs = _vocabularies(seed=0)
    yesterday = VocabularyFiles(tmp / "yesterday", old_vocabs)
    today = VocabularyFiles(tmp / "today", new_vocabs)
    old_model = _build(yesterday, seed=1)
    warm_start.save(old_model, yesterday, tmp / "saved")
    new_model = _build(today, seed=2)  # a second model in this process, as a second run is
    fresh = [v.numpy().copy() for v in new_model.weights]
    counts = warm_start.restore(new_model, today, tmp / "saved")
    return {
        "old": old_model,
        "new": new_model,
        "fresh": fresh,
        "counts": counts,
        "old_vocabs": old_vocabs,
        "new_vocabs": new_vocabs,
    }


def test_the_name_pattern_finds_every_vocabulary_table(warm_started):
    model = warm_started["new"]
    tables = _tables(model)
    # Both stages, every vocabulary: context ids, the sequence's and candidates' ids.
    assert set(tables.values()) == set(preprocessing.VOCAB_FILENAMES)
    assert len(tables) == 2 * 3 + 5 + 5 + 3  # context (x2), candidate features (x2), sequence
    for variable in model.weights:
        match = warm_start._TABLE.search(variable.name)
        found = match.group("vocab") if match else None
        if id(variable) in tables:
            assert found == tables[id(variable)], variable.name
        else:
            assert found not in preprocessing.VOCAB_FILENAMES, variable.name


def test_restore_counts(warm_started):
    counts = warm_started["counts"]
    tables = _tables(warm_started["new"])
    assert counts["remapped"] == len(tables), counts
    assert counts["missing"] == 0, counts
    assert counts["skipped"] == 0, counts
    assert counts["copied"] == len(warm_started["new"].weights) - len(tables), counts


def test_table_rows_follow_their_ids(warm_started):
    old_model, new_model = warm_started["old"], warm_started["new"]
    tables = _tables(new_model)
    checked = 0
    for position, (old_var, new_var) in enumerate(
        zip(old_model.weights, new_model.weights, strict=True)
    ):
        if id(new_var) not in tables:
            continue
        vocab = tables[id(new_var)]
        old_rows, new_rows = old_var.numpy(), new_var.numpy()
        fresh = warm_started["fresh"][position]
        old_vocab, new_vocab = warm_started["old_vocabs"][vocab], warm_started["new_vocabs"][vocab]
        assert new_rows.shape == (len(new_vocab) + OOV + 1, old_rows.shape[1])
        old_index = {token: i + 1 for i, token in enumerate(old_vocab)}
        np.testing.assert_array_equal(new_rows[0], old_rows[0], err_msg=f"{vocab}: padding row")
        kept = new_ids = 0
        for i, token in enumerate(new_vocab):
            if token in old_index:
                np.testing.assert_array_equal(
                    new_rows[i + 1], old_rows[old_index[token]], err_msg=f"{vocab}: id {token}"
                )
                kept += 1
            else:
                np.testing.assert_array_equal(
                    new_rows[i + 1], fresh[i + 1], err_msg=f"{vocab}: new id {token}"
                )
                new_ids += 1
        assert kept > 0 and new_ids > 0
        np.testing.assert_array_equal(
            new_rows[len(new_vocab) + 1 :],
            old_rows[len(old_vocab) + 1 :],
            err_msg=f"{vocab}: OOV rows",
        )
        # Shared ids moved: a copy by position would not pass the row checks above.
        assert any(new_vocab.index(t) + 1 != j for t, j in old_index.items() if t in new_vocab)
        checked += 1
    assert checked == len(tables)


def test_every_other_weight_is_copied(warm_started):
    old_model, new_model = warm_started["old"], warm_started["new"]
    tables = _tables(new_model)
    copied = 0
    for position, (old_var, new_var) in enumerate(
        zip(old_model.weights, new_model.weights, strict=True)
    ):
        if id(new_var) in tables:
            continue
        np.testing.assert_array_equal(new_var.numpy(), old_var.numpy(), err_msg=new_var.name)
        if new_var.trainable and not np.array_equal(
            warm_started["fresh"][position], old_var.numpy()
        ):
            copied += 1
    # MLPs, attention projections, small categorical tables and LCRON's UWL weights.
    assert copied >= 10


def test_the_warm_started_model_scores_like_the_old_one_on_shared_ids(warm_started):
    """End to end: a request whose ids all exist in both vocabularies gets the same scores."""
    old_vocabs, new_vocabs = warm_started["old_vocabs"], warm_started["new_vocabs"]
    old_batch = _inputs(preprocessing.vocabulary_sizes(_Sizes(old_vocabs)), seed=5)
    # Point every vocabulary index at a shared id, then translate old index -> new index.
    translated = dict(old_batch)
    fixed = dict(old_batch)
    for name, vocab in (
        ("user_id", "user_id"),
        ("device_id", "device_id"),
        ("province", "province"),
        ("video_id", "video_id"),
        ("author_id", "author_id"),
        ("category_level_one", "category_level_one"),
        ("category_level_two", "category_level_two"),
        ("upload_type", "upload_type"),
        ("seq_video_id", "video_id"),
        ("seq_author_id", "author_id"),
        ("seq_category_level_two", "category_level_two"),
    ):
        shared = [t for t in old_vocabs[vocab] if t in set(new_vocabs[vocab])]
        old_idx = np.array([old_vocabs[vocab].index(t) + 1 for t in shared])
        new_idx = np.array([new_vocabs[vocab].index(t) + 1 for t in shared])
        raw = old_batch[xf(name)].numpy()
        pick = raw % len(shared)
        fixed[xf(name)] = tf.constant(np.where(raw > 0, old_idx[pick], 0))
        translated[xf(name)] = tf.constant(np.where(raw > 0, new_idx[pick], 0))
    before = warm_started["old"](fixed)
    after = warm_started["new"](translated)
    for stage in ("retrieval", "ranking"):
        np.testing.assert_allclose(after[stage], before[stage], rtol=1e-5, atol=1e-6)


class _Sizes:
    """Vocabulary sizes only (enough for ``preprocessing.vocabulary_sizes``)."""

    def __init__(self, vocabularies: dict[str, list[str]]) -> None:
        by_file = {f: n for n, f in preprocessing.VOCAB_FILENAMES.items()}
        self.sizes = {f: len(vocabularies[n]) for f, n in by_file.items()}

    def vocabulary_size_by_name(self, filename: str) -> int:
        return self.sizes[filename]
