"""Micro-batching: concurrent calls leave together, each gets its own rows back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

from serving.batching import MicroBatcher


def _run(gate: threading.Event, calls: list[int]):
    def run(inputs):
        gate.wait(5)  # hold the first call so later requests queue up behind it
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2 + inputs["z"].sum(axis=1, keepdims=True)}

    return run


def _drive(batcher, requests, gate):
    async def main():
        tasks = [asyncio.ensure_future(batcher(r)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def _request(i: int, width: int = 3, rows: int = 1):
    return {
        "x": np.full([rows, width], i, np.int64),
        "z": np.arange(rows * 2, dtype=np.int64).reshape(rows, 2) + i,
    }


@pytest.fixture
def executor():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield pool


def test_queued_requests_run_as_one_batch_with_their_own_rows(executor):
    gate, calls = threading.Event(), []
    batcher = MicroBatcher(_run(gate, calls), executor, max_batch=8, max_inflight=1)
    requests = [_request(i) for i in range(10)]
    results = _drive(batcher, requests, gate)
    # 1 runs alone (nothing queued yet); 9 queued meanwhile: 8 (max_batch) then 1.
    assert calls == [1, 8, 1]
    for r, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out["y"], r["x"] * 2 + r["z"].sum(axis=1, keepdims=True))


def test_different_shapes_are_never_batched_together(executor):
    gate, calls = threading.Event(), []
    batcher = MicroBatcher(_run(gate, calls), executor, max_batch=32, max_inflight=1)
    requests = [_request(0), *[_request(i, width=3 + i % 2) for i in range(1, 7)]]
    results = _drive(batcher, requests, gate)
    assert calls == [1, 3, 3]  # widths 4 (i = 1, 3, 5) and 3 (i = 2, 4, 6) apart
    for r, out in zip(requests, results, strict=True):
        assert out["y"].shape == r["x"].shape


def test_a_failing_batch_fails_each_of_its_requests_and_later_ones_still_run(executor):
    gate, calls = threading.Event(), []
    batcher = MicroBatcher(_run(gate, calls), executor, max_batch=4, max_inflight=1)
    requests = [_request(1), _request(2), _request(-1), _request(3), _request(4), _request(5)]
    results = _drive(batcher, requests, gate)
    assert calls == [1, 4, 1]
    assert not isinstance(results[0], Exception)
    assert all(isinstance(r, ValueError) for r in results[1:5])  # the batch holding the -1
    np.testing.assert_array_equal(results[5]["y"], requests[5]["x"] * 2 + 11)


def test_max_batch_one_disables_batching(executor):
    gate, calls = threading.Event(), []
    batcher = MicroBatcher(_run(gate, calls), executor, max_batch=1, max_inflight=2)
    _drive(batcher, [_request(i) for i in range(5)], gate)
    assert calls == [1] * 5
