"""The replay's ground truth: the world rebuilt from a log's manifest is the world that wrote it,
and a day's requests are read back as the service would get them."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest

from models.features import GROUP_SIZE, PAD_ID
from simulator import simulate, truth

# The module (``simulator.simulate`` the name is the function the package exports).
simulate_module = importlib.import_module("simulator.simulate")


def test_rebuilt_world_equals_the_world_each_day_was_simulated_with(
    small_config, tmp_path, monkeypatch
):
    # Spy on the real cascade: record the world it served each day with (nothing replaced).
    seen: dict[int, dict[str, np.ndarray]] = {}
    real = simulate_module.run_cascade

    def recording(world, users, now_ms, rng, salt, author_counts=None):
        day = int((now_ms[0] - small_config.start_timestamp_ms) // 86_400_000)
        seen.setdefault(
            day,
            {
                "interests": world.interests.copy(),
                "log_popularity": world.log_popularity.copy(),
                "upload_timestamp": world.upload_timestamp.copy(),
                "category_pref": world.category_pref.copy(),
                "author_quality": world.author_quality.copy(),
                "affinity_mean": np.array(world.affinity_mean),
            },
        )
        return real(world, users, now_ms, rng, salt, author_counts)

    monkeypatch.setattr(simulate_module, "run_cascade", recording)
    simulate(small_config, tmp_path, days=3, requests_per_day=20, seed=5)
    assert sorted(seen) == [0, 1, 2]
    for day, arrays in seen.items():
        world = simulate_module.world_on_day(small_config, 5, day)
        for name, value in arrays.items():
            np.testing.assert_array_equal(np.asarray(getattr(world, name)), value, err_msg=name)


def test_load_day_reads_every_request_with_its_context_and_production_answer(clean_log):
    out, manifest = clean_log
    day = truth.load_day(out, 1)
    requests = day.requests
    assert day.day == 1 and len(requests) == manifest["per_day"][1]["requests"]
    ctx = requests.context
    assert np.all(np.diff(ctx["request_timestamp"]) >= 0)  # time order
    start = manifest["per_day"][1]["start_timestamp_ms"]
    assert np.all((ctx["request_timestamp"] >= start) & (ctx["request_timestamp"] < start + 864e5))
    # The production answer: 10 distinct rank_pos items, of which 4..8 were shown.
    assert requests.production.shape == (len(requests), GROUP_SIZE)
    assert np.all(requests.production != PAD_ID)
    assert all(len(set(row)) == GROUP_SIZE for row in requests.production.tolist())
    assert np.all((requests.exposed >= 4) & (requests.exposed <= 8))
    # Every logged video was available at its request's time, and its truth is finite.
    available = day.available()
    logged = requests.logged
    assert np.all((logged == PAD_ID) | (logged < available[:, None]))
    affinity = day.true_affinity(np.arange(len(requests)))
    assert affinity.shape == (len(requests), day.world.num_items)
    assert np.all(np.isfinite(affinity) == (np.arange(day.world.num_items) < available[:, None]))


def test_production_answers_are_far_above_a_random_pair_under_the_rebuilt_truth(clean_log):
    out, _ = clean_log
    day = truth.load_day(out)  # the last day
    rows = np.arange(len(day.requests))
    affinity = day.true_affinity(rows)
    production = np.take_along_axis(affinity, day.requests.production, axis=1)
    finite = np.where(np.isfinite(affinity), affinity, np.nan)
    # Affinity is in standard deviations of a random pair: the cascade's picks are far above.
    assert production.mean() > np.nanmean(finite) + 2.0
    # The cascade's order follows the truth: its first half beats its second half.
    assert production[:, :5].mean() > production[:, 5:].mean()


def test_corrupted_csv_log_reads_back_to_the_clean_requests(small_config, clean_log, tmp_path):
    clean_out, _ = clean_log
    corrupt = tmp_path / "csv"
    simulate(
        small_config, corrupt, days=3, requests_per_day=60, seed=7, fmt="csv", corrupt_fraction=0.1
    )
    a, b = truth.load_day(clean_out, 2).requests, truth.load_day(corrupt, 2).requests
    for name in a.context:
        np.testing.assert_array_equal(a.context[name], b.context[name])
    np.testing.assert_array_equal(a.production, b.production)
    np.testing.assert_array_equal(a.sequences["seq_video_id"], b.sequences["seq_video_id"])
    np.testing.assert_array_equal(np.sort(a.logged, axis=1), np.sort(b.logged, axis=1))


def test_a_log_the_manifest_does_not_describe_fails_loudly(clean_log, tmp_path):
    out, manifest = clean_log
    copy = tmp_path / "log"
    shutil.copytree(out, copy)
    edited = dict(manifest, seed=manifest["seed"] + 1)  # another world
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="disagree with the rebuilt world"):
        truth.load_day(copy, 1)
    with pytest.raises(ValueError, match="days 0..2"):
        truth.load_day(out, 3)
    with pytest.raises(FileNotFoundError, match="no simulator manifest"):
        truth.load_day(tmp_path)


def test_logged_items_are_the_candidates_of_the_given_days(clean_log):
    out, _ = clean_log
    items = truth.logged_items(out, [0, 1])
    day0, day1 = truth.load_day(out, 0).requests.logged, truth.load_day(out, 1).requests.logged
    expected = np.unique(np.concatenate([day0[day0 != PAD_ID], day1[day1 != PAD_ID]]))
    np.testing.assert_array_equal(items, expected)


def test_truth_counts_the_creators_of_the_requests_logged_sequence(clean_log):
    out, _ = clean_log
    day = truth.load_day(out, 2)
    world = day.world
    assert world.config.loyalty_weight > 0
    rows = np.flatnonzero(day.requests.sequence_length > 0)[:5]
    assert len(rows) == 5
    with_views = day.true_affinity(rows)
    ctx = day.requests.context
    n = world.num_items
    items = np.broadcast_to(np.arange(n), (len(rows), n))
    without = world.affinity(ctx["user_id"][rows], items, ctx["request_timestamp"][rows])
    for i, row in enumerate(rows):
        seen = set(world.author[day.requests.sequence("seq_video_id", row)].tolist())
        available = np.isfinite(with_views[i])
        lifted = with_views[i, available] > without[i, available]
        # Exactly the videos by a creator the user has just watched gain.
        np.testing.assert_array_equal(lifted, np.isin(world.author[:n][available], list(seen)))
