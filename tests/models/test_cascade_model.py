"""CascadeModel on synthetic transformed batches: shapes, masking, padding, every loss, Keras logs
and a distribution strategy. No TFX, no Beam: the batches are built here in Transform's output
layout (``models.preprocessing``: 0 = padding, 1..V vocabulary, then the OOV buckets)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import distribution, features, losses, preprocessing
from models.cascade_model import STAGES, CascadeModel
from models.config import LossConfig, MetricConfig, ModelConfig, StageConfig
from models.prerank_stage import PreRankingStage
from models.ranking_stage import TargetAttention

xf = features.transformed_name
# The default cascade with cut-offs scaled to short lists (keep 12, then 8).
SMALL_MODEL = ModelConfig(
    stages=(
        StageConfig("retrieval", "two_tower", 12, "retrieval"),
        StageConfig("ranking", "din", 8, "rescore"),
    )
)
VOCAB = 40  # ids per vocabulary in these tests
SIZES = {name: VOCAB + preprocessing.NUM_OOV_BUCKETS + 1 for name in preprocessing.VOCAB_FILENAMES}
CONTEXT_IDS = ("user_id", "device_id", "province")
CANDIDATE_IDS = ("video_id", "author_id", "category_level_one", "category_level_two", "upload_type")
CANDIDATE_DENSE = (features.DURATION_LOG, features.UPLOAD_TIME, features.ITEM_AGE)
SEQUENCE_IDS = {
    "seq_video_id": "video_id",
    "seq_author_id": "author_id",
    "seq_category_level_two": "category_level_two",
}


def make_batch(
    batch: int,
    list_size: int,
    *,
    seed: int = 0,
    valid: list[int] | None = None,
    seq_valid: list[int] | None = None,
) -> dict[str, tf.Tensor]:
    """Transformed features of ``batch`` requests of ``list_size`` candidates.

    ``valid[i]`` real candidates (the rest padding: index 0, zeros, mask 0, label 0) and
    ``seq_valid[i]`` behaviour-sequence items (the rest padding, SEQ_MASK 0) per request;
    default: the first request full, the second with a quarter of padding and an empty sequence.
    Ids cover the vocabulary and the OOV buckets; labels are the paper's graded stage labels.
    """
    rng = np.random.default_rng(seed)
    if valid is None:
        valid = [list_size] + [list_size - list_size // 4] * (batch - 1)
    if seq_valid is None:
        seq_valid = [features.SEQ_LEN // 2] + [0] + [7] * (batch - 2)
    seq_valid = seq_valid[:batch]
    cand_mask = np.arange(list_size)[None, :] < np.array(valid)[:, None]  # [B, L]
    seq_mask = np.arange(features.SEQ_LEN)[None, :] < np.array(seq_valid)[:, None]  # [B, S]
    out: dict[str, np.ndarray] = {}
    for name in CONTEXT_IDS:
        out[xf(name)] = rng.integers(1, SIZES[name], (batch, 1))
    for name, size in features.SMALL_CATEGORICAL_SIZES.items():
        out[xf(name)] = rng.integers(0, size, (batch, 1))
    out[xf(features.REQUEST_HOUR)] = rng.integers(0, 24, (batch, 1)).astype(np.float32)
    out[xf(features.REQUEST_DAY_OF_WEEK)] = rng.integers(0, 7, (batch, 1)).astype(np.float32)
    for name in CANDIDATE_IDS:
        ids = rng.integers(1, SIZES[name], (batch, list_size))
        out[xf(name)] = np.where(cand_mask, ids, preprocessing.PAD_INDEX)
    for name in CANDIDATE_DENSE:
        values = rng.normal(size=(batch, list_size)).astype(np.float32)
        out[xf(name)] = np.where(cand_mask, values, 0.0).astype(np.float32)
    for name, vocab in SEQUENCE_IDS.items():
        ids = rng.integers(1, SIZES[vocab], (batch, features.SEQ_LEN))
        out[xf(name)] = np.where(seq_mask, ids, preprocessing.PAD_INDEX)
    out[xf(features.SEQ_MASK)] = seq_mask.astype(np.float32)
    # Graded labels: four stage groups (0, 1, 2, 3 + (G - rank) / G), shuffled over real items.
    labels = np.zeros((batch, list_size), np.float32)
    for i, n in enumerate(valid):
        group = max(n // 4, 1)
        position = np.arange(n)
        grade = np.minimum(position // group, 3).astype(np.float32)
        top = grade == 3
        grade[top] += (group - np.arange(top.sum())) / group
        labels[i, :n] = rng.permutation(grade)
    out[xf(features.LABEL)] = labels
    out[xf(features.MASK)] = cand_mask.astype(np.int64)
    return {name: tf.constant(value) for name, value in out.items()}


def build_model(list_size: int, method: str = "lcron", small: bool = False) -> CascadeModel:
    """A compiled, built model; ``small``: cut-offs scaled to a short list (gt 4, keep 12 / 8)."""
    tf.keras.utils.set_random_seed(0)
    loss_config = LossConfig(method=method)
    metric_config = MetricConfig()
    model_config = ModelConfig()
    if small:
        loss_config = LossConfig(method=method, gt_num=4)
        metric_config = MetricConfig(gt_num=4, ndcg_k=4)
        model_config = SMALL_MODEL
    model = CascadeModel(
        SIZES,
        list_size,
        model_config=model_config,
        loss_config=loss_config,
        metric_config=metric_config,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), run_eagerly=True)
    model(make_batch(2, list_size))
    return model


def _stage_weights(model: CascadeModel) -> dict[str, list[np.ndarray]]:
    return {s: [v.numpy().copy() for v in getattr(model, s).trainable_weights] for s in STAGES}


def _changed(before: list[np.ndarray], after: list[tf.Variable]) -> int:
    return sum(not np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize(("batch", "list_size"), [(3, 7), (5, 23)])
def test_both_stages_score_every_candidate_for_any_list_size(batch, list_size):
    model = build_model(list_size)
    logits = model(make_batch(batch, list_size, seed=1))
    assert set(logits) == set(STAGES)
    for stage in STAGES:
        assert logits[stage].shape == (batch, list_size), stage
        assert np.all(np.isfinite(logits[stage].numpy())), stage


def test_target_attention_gives_masked_positions_no_weight():
    tf.keras.utils.set_random_seed(0)
    layer = TargetAttention(attention_dim=8)
    rng = np.random.default_rng(0)
    candidates = tf.constant(rng.normal(size=(2, 3, 6)), tf.float32)
    sequence = rng.normal(size=(2, 5, 6)).astype(np.float32)
    mask = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], np.float32)
    out = layer(candidates, tf.constant(sequence), tf.constant(mask)).numpy()

    changed = sequence.copy()
    changed[mask == 0] = 100.0 * rng.normal(size=changed[mask == 0].shape)
    np.testing.assert_array_equal(
        layer(candidates, tf.constant(changed), tf.constant(mask)).numpy(), out
    )
    # ...while a valid position does count (the check above is not vacuous).
    changed = sequence.copy()
    changed[0, 2] += 1.0
    assert not np.allclose(layer(candidates, tf.constant(changed), tf.constant(mask)).numpy(), out)


def test_target_attention_of_an_empty_sequence_is_zero():
    tf.keras.utils.set_random_seed(0)
    layer = TargetAttention(attention_dim=4)
    rng = np.random.default_rng(1)
    candidates = tf.constant(rng.normal(size=(2, 4, 6)), tf.float32)
    sequence = tf.constant(rng.normal(size=(2, 5, 6)), tf.float32)
    mask = tf.constant([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], tf.float32)
    out = layer(candidates, sequence, mask).numpy()
    assert out.shape == (2, 4, 6)
    np.testing.assert_array_equal(out[1], np.zeros((4, 6), np.float32))
    assert np.all(np.abs(out[0]).sum(axis=-1) > 0)


def test_masked_sequence_items_do_not_change_either_stage():
    model = build_model(9)
    batch = make_batch(3, 9, seed=2, seq_valid=[10, 0, 3])
    before = model(batch)
    seq_mask = batch[xf(features.SEQ_MASK)].numpy()
    changed = dict(batch)
    rng = np.random.default_rng(3)
    for name, vocab in SEQUENCE_IDS.items():
        ids = rng.integers(1, SIZES[vocab], seq_mask.shape)  # real ids where SEQ_MASK is 0
        changed[xf(name)] = tf.constant(np.where(seq_mask > 0, batch[xf(name)].numpy(), ids))
    after = model(changed)
    for stage in STAGES:
        np.testing.assert_allclose(after[stage], before[stage], rtol=1e-6, atol=1e-6)
    # A valid sequence item does move the scores (the check above is not vacuous).
    changed = dict(batch)
    ids = batch[xf("seq_video_id")].numpy().copy()
    ids[0, 0] = ids[0, 0] % VOCAB + 1
    changed[xf("seq_video_id")] = tf.constant(ids)
    after = model(changed)
    for stage in STAGES:
        assert not np.allclose(after[stage][0], before[stage][0]), stage


def test_padding_candidates_do_not_change_real_scores():
    model = build_model(10)
    real = make_batch(3, 10, seed=4, valid=[10, 10, 10])
    padded = make_batch(3, 16, seed=5, valid=[10, 10, 10])
    # Same real candidates and context, then 6 padding candidates.
    for name, value in real.items():
        if value.shape[1:] == (10,):
            padded[name] = tf.concat([value, padded[name][:, 10:]], axis=1)
        else:
            padded[name] = value
    base = model(real)
    with_padding = model(padded)
    for stage in STAGES:
        assert with_padding[stage].shape == (3, 16)
        np.testing.assert_allclose(with_padding[stage][:, :10], base[stage], rtol=1e-5, atol=1e-5)
    # Whatever the padding slots hold, real scores stay the same.
    noisy = dict(padded)
    rng = np.random.default_rng(6)
    for name in (*CANDIDATE_IDS, *CANDIDATE_DENSE):
        value = padded[xf(name)].numpy().copy()
        if name in CANDIDATE_IDS:
            value[:, 10:] = rng.integers(1, SIZES[name], value[:, 10:].shape)
        else:
            value[:, 10:] = rng.normal(size=value[:, 10:].shape)
        noisy[xf(name)] = tf.constant(value)
    with_noise = model(noisy)
    for stage in STAGES:
        np.testing.assert_allclose(with_noise[stage][:, :10], base[stage], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_one_train_step_with_every_loss_trains_both_stages(method):
    list_size = 18
    model = build_model(list_size, method=method, small=True)
    batch = make_batch(4, list_size, seed=7)
    before = _stage_weights(model)
    logs = model.train_step(batch)
    loss = float(logs["loss"])
    assert np.isfinite(loss), (method, loss)
    for stage in STAGES:
        changed = _changed(before[stage], getattr(model, stage).trainable_weights)
        assert changed > 0, f"{method}: no weight of the {stage} stage moved"
    for name, value in logs.items():
        assert np.all(np.isfinite(np.asarray(value))), (method, name)


@pytest.mark.parametrize(
    ("method", "terms"),
    [
        (
            "lcron",
            {"l_e2e", "l_single_retrieval", "l_single_ranking", "uwl_w_retrieval", "uwl_w_ranking"},
        ),
        ("bce", {"l_bce_retrieval", "l_bce_ranking"}),
    ],
)
def test_fit_history_logs_loss_terms_and_cascade_metrics(method, terms):
    list_size = 34  # the default cut-offs (gt 10, keep 30 then 20) on a list that is not 40
    model = build_model(list_size, method=method)
    data = tf.data.Dataset.from_tensors(make_batch(4, list_size, seed=8)).repeat(2)
    history = model.fit(data, epochs=1, validation_data=data.take(1), verbose=0).history
    cascade_metrics = {
        "recall_at_10_at_30_at_20",
        "retrieval_recall_at_10_at_30",
        "ranking_recall_at_10_at_20",
        "retrieval_ndcg_at_10",
        "ranking_ndcg_at_10",
        "retrieval_kendall_tau",
        "ranking_kendall_tau",
    }
    expected = {"loss", *terms, *cascade_metrics}
    missing = sorted((expected | {f"val_{n}" for n in expected}) - set(history))
    assert not missing, (missing, sorted(history))
    for name in expected:
        assert np.isfinite(history[name][-1]), name
    for name in cascade_metrics - {"retrieval_kendall_tau", "ranking_kendall_tau"}:
        assert 0.0 <= history[name][-1] <= 1.0, name


@pytest.mark.parametrize("run_eagerly", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_training_under_a_mirrored_strategy(run_eagerly):
    strategy = distribution.strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1
    list_size = 22
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = CascadeModel(
            SIZES,
            list_size,
            model_config=SMALL_MODEL,
            loss_config=LossConfig(gt_num=4),
            metric_config=MetricConfig(gt_num=4, ndcg_k=4),
        )
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01), run_eagerly=run_eagerly)
        model(make_batch(2, list_size))
    assert model.distribute_strategy is strategy
    assert isinstance(model.retrieval.trainable_weights[0], tf.distribute.DistributedValues)
    before = _stage_weights(model)
    data = tf.data.Dataset.from_tensors(make_batch(4, list_size, seed=9))
    history = model.fit(data, epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"])), history["loss"]
    assert "l_e2e" in history and "recall_at_4_at_12_at_8" in history, sorted(history)
    for stage in STAGES:
        assert _changed(before[stage], getattr(model, stage).trainable_weights) > 0, stage


def test_corpus_term_is_added_with_its_weight_and_trains_only_retrieval():
    list_size = 12
    batch = make_batch(4, list_size, seed=3)
    rows = SIZES["video_id"]
    log_q = np.log(np.linspace(1.0, 2.0, rows) / np.linspace(1.0, 2.0, rows).sum())
    plain = CascadeModel(SIZES, list_size, loss_config=LossConfig())
    config = LossConfig(corpus_weight=0.5, corpus_negatives="logged")
    model = CascadeModel(SIZES, list_size, loss_config=config, item_log_q=log_q)
    plain(batch)
    model(batch)
    for part in ("retrieval", "ranking", "cascade_loss"):  # the same network and UWL weights
        getattr(model, part).set_weights(getattr(plain, part).get_weights())
    labels = tf.cast(batch[xf(features.LABEL)], tf.float32)
    mask = tf.cast(batch[xf(features.MASK)], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        l_corpus = model.corpus_term(batch, labels, mask)
        total = model.compute_loss(batch, training=True)
    expected_term = losses.corpus_softmax_loss(
        model.retrieval.query_tower(batch),
        model.retrieval.candidate_tower(batch),
        batch[xf("video_id")],
        losses.ground_truth_indicator(labels, mask, config.gt_num),
        mask,
        tf.gather(tf.constant(log_q, tf.float32), batch[xf("video_id")]),
    )
    np.testing.assert_allclose(float(l_corpus), float(expected_term), rtol=1e-6)
    np.testing.assert_allclose(
        float(total),
        float(plain.compute_loss(batch, training=True)) + 0.5 * float(l_corpus),
        rtol=1e-5,
    )
    assert float(model.corpus_tracker.result()) == pytest.approx(float(l_corpus))
    grads = tape.gradient(
        l_corpus, [*model.retrieval.trainable_weights, *model.ranking.trainable_weights]
    )
    n = len(model.retrieval.trainable_weights)
    assert any(
        g is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0
        for g in grads[:n]
    )
    assert all(g is None for g in grads[n:])
    # In-batch negatives (the default): only the batch's ground-truth items are sampled.
    in_batch = CascadeModel(
        SIZES, list_size, loss_config=LossConfig(corpus_weight=0.5), item_log_q=log_q
    )
    in_batch(batch)
    in_batch.retrieval.set_weights(plain.retrieval.get_weights())
    positives = losses.ground_truth_indicator(labels, mask, config.gt_num)
    expected_in_batch = losses.corpus_softmax_loss(
        model.retrieval.query_tower(batch),
        model.retrieval.candidate_tower(batch),
        batch[xf("video_id")],
        positives,
        positives,
        tf.gather(tf.constant(log_q, tf.float32), batch[xf("video_id")]),
    )
    np.testing.assert_allclose(
        float(in_batch.corpus_term(batch, labels, mask)), float(expected_in_batch), rtol=1e-6
    )
    assert float(expected_in_batch) != pytest.approx(float(expected_term))
    with pytest.raises(ValueError, match="item_log_q"):
        CascadeModel(SIZES, list_size, loss_config=config)


@pytest.mark.parametrize("run_eagerly", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_train_metrics_every_n_steps_and_on_each_epochs_first(run_eagerly):
    """Cascade metrics update on steps 0, n, 2n, ... and on an epoch's first step; the loss
    terms on every step; evaluation on every batch."""
    list_size, batch = 16, 3
    tf.keras.utils.set_random_seed(0)
    model = CascadeModel(
        SIZES,
        list_size,
        model_config=SMALL_MODEL,
        loss_config=LossConfig(gt_num=4),
        metric_config=MetricConfig(gt_num=4, ndcg_k=4),
        train_metrics_every=3,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), run_eagerly=run_eagerly)
    data = tf.data.Dataset.from_tensors(make_batch(batch, list_size, seed=3)).repeat()
    recall = model.cascade_metrics["cascade_recall"]
    model.fit(data, epochs=1, steps_per_epoch=5, verbose=0)  # steps 0..4: updates at 0 and 3
    assert float(recall.count) == 2 * batch
    assert float(model.term_trackers["l_e2e"].count) == 5
    # Next epoch (steps 5, 6): Keras resets the metrics, step 5 is not due, but it is the
    # epoch's first, so the epoch still logs its metrics; step 6 is due.
    history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0).history
    assert float(recall.count) == 2 * batch
    assert history["recall_at_4_at_12_at_8"][-1] > 0.0
    model.evaluate(data.take(4), verbose=0)
    assert float(recall.count) == 4 * batch
    with pytest.raises(ValueError, match="train_metrics_every"):
        CascadeModel(SIZES, list_size, train_metrics_every=0)


# --- N stages ---------------------------------------------------------------------------------

THREE_STAGES = ModelConfig(
    stages=(
        StageConfig("retrieval", "two_tower", 12, "retrieval"),
        StageConfig("prerank", "mlp", 10, "rescore"),
        StageConfig("ranking", "din", 8, "rescore"),
    )
)


def test_three_stages_from_config_score_train_and_log_per_stage():
    list_size = 16
    tf.keras.utils.set_random_seed(0)
    model = CascadeModel(
        SIZES,
        list_size,
        model_config=THREE_STAGES,
        loss_config=LossConfig(gt_num=4),
        metric_config=MetricConfig(gt_num=4, ndcg_k=4),
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), run_eagerly=True)
    logits = model(make_batch(3, list_size, seed=2))
    # The export's contract: configs and layers in cascade order, aliases of first and last.
    assert [s.name for s in model.stage_configs] == ["retrieval", "prerank", "ranking"]
    assert list(model.stage_layers) == ["retrieval", "prerank", "ranking"]
    assert list(logits) == ["retrieval", "prerank", "ranking"]
    assert model.retrieval is model.stage_layers["retrieval"]
    assert model.ranking is model.stage_layers["ranking"]
    assert isinstance(model.stage_layers["prerank"], PreRankingStage)
    batch = make_batch(3, list_size, seed=2)
    assert model.retrieval.query_tower(batch).shape == (3, 16)
    assert model.retrieval.candidate_tower(batch).shape == (3, list_size, 16)
    for name, layer in model.stage_layers.items():
        assert layer(batch).shape == (3, list_size), name
        np.testing.assert_allclose(layer(batch).numpy(), logits[name].numpy(), rtol=1e-6)
    before = {
        n: [v.numpy().copy() for v in layer.trainable_weights]
        for n, layer in model.stage_layers.items()
    }
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    for name, layer in model.stage_layers.items():
        assert _changed(before[name], layer.trainable_weights) > 0, name
    assert "recall_at_4_at_12_at_10_at_8" in history, sorted(history)
    for name in ("retrieval_recall_at_4_at_12", "prerank_recall_at_4_at_10", "ranking_ndcg_at_4"):
        assert name in history, sorted(history)
    assert "l_single_stage1" in history and "l_e2e" in history, sorted(history)


def test_a_baseline_without_a_four_stage_form_is_refused_by_name_before_building():
    four = ModelConfig(
        stages=(
            *THREE_STAGES.stages[:2],
            StageConfig("ranking", "din", 9, "rescore"),
            StageConfig("rerank", "din", 8, "rescore"),
        )
    )
    with pytest.raises(ValueError, match="'bce' has no 4-stage form"):
        CascadeModel(SIZES, 16, model_config=four, loss_config=LossConfig(method="bce", gt_num=4))


def test_prerank_stage_ignores_padding_of_the_sequence():
    list_size = 6
    tf.keras.utils.set_random_seed(0)
    layer = PreRankingStage(SIZES, ModelConfig())
    batch = make_batch(2, list_size, seed=4)
    out = layer(batch).numpy()
    changed = dict(batch)
    seq_mask = batch[xf(features.SEQ_MASK)].numpy()
    ids = batch[xf("seq_video_id")].numpy().copy()
    ids[seq_mask == 0] = 3  # another id where the sequence is padding
    changed[xf("seq_video_id")] = tf.constant(ids)
    np.testing.assert_allclose(layer(changed).numpy(), out, rtol=1e-6)
