"""The load generator: arrival schedules, and open-loop latency that counts the queue.

A toy HTTP server (asyncio, in a thread) answers one request at a time in ``SERVICE_MS``: its
capacity is 1000 / SERVICE_MS requests/s. Offered more than that, a queue builds up. The open
loop must show it (latency from the scheduled send time grows with the queue); the closed loop,
by construction, does not (it only sends when the previous answer is back).
"""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from serving import loadgen

SERVICE_MS = 20.0  # the toy server's time per request, one at a time: 50 requests/s at most


def test_poisson_arrivals_have_the_rate_and_exponential_gaps():
    offsets = loadgen.arrival_offsets(200.0, 50.0, "poisson", seed=3)
    assert np.all(np.diff(offsets) > 0) and offsets[0] >= 0 and offsets[-1] < 50.0
    assert len(offsets) == pytest.approx(200 * 50, rel=0.05)
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 200, rel=0.1)  # exponential: std == mean
    again = loadgen.arrival_offsets(200.0, 50.0, "poisson", seed=3)
    np.testing.assert_array_equal(offsets, again)  # a seed fixes the schedule


def test_constant_arrivals_are_evenly_spaced():
    offsets = loadgen.arrival_offsets(4.0, 2.0, "constant")
    np.testing.assert_allclose(offsets, [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    with pytest.raises(ValueError, match="arrival"):
        loadgen.arrival_offsets(4.0, 2.0, "bursty")


def test_server_timing_header_is_parsed():
    header = 'queue;dur=0.5, retrieval;dur=1.25, ranking;dur=2, total;dur=4.1, batch;desc="3"'
    assert loadgen.server_timing(header) == {
        "queue": 0.5,
        "retrieval": 1.25,
        "ranking": 2.0,
        "total": 4.1,
        "batch": 3.0,
    }
    assert loadgen.server_timing('cache;desc="hit", db;dur=x') == {}


class _ToyServer:
    """HTTP/1.1 keep-alive server answering ``{"items": [...]}`` one request at a time."""

    def __init__(self, items: int = 2) -> None:
        self.items = items
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.served = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        lock = asyncio.Lock()
        body = json.dumps({"items": list(range(self.items))}).encode()

        async def handle(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await reader.readexactly(length)
                    async with lock:  # one at a time: a queue forms beyond capacity
                        await asyncio.sleep(SERVICE_MS / 1e3)
                    self.served += 1
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"server-timing: total;dur=%.3f\r\ncontent-length: %d\r\n\r\n"
                        % (SERVICE_MS, len(body))
                        + body
                    )
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                writer.close()

        async def start():
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.server.close()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(5)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


BODIES = [b'{"user": {"user_id": 1}, "k": 2}']


def test_open_loop_counts_the_queue_that_a_closed_loop_hides():
    with _ToyServer() as url:
        # Within capacity (20 of 50 requests/s): latency is about the service time.
        light = asyncio.run(
            loadgen.open_loop(url, BODIES, 20, 1.5, warmup_s=0.2, expect_items=2, seed=1)
        )
        # Twice the capacity for 1.5 s: about 75 requests queue up behind the server.
        heavy = asyncio.run(
            loadgen.open_loop(
                url, BODIES, 100, 1.5, warmup_s=0.0, expect_items=2, timeout_s=30, seed=1
            )
        )
        closed = asyncio.run(loadgen.closed_loop(url, BODIES, 1, 1.0, warmup_s=0.1))
    assert light.error_count == heavy.error_count == closed.error_count == 0
    assert light.ok == light.sent and heavy.ok == heavy.sent
    # Relations, not absolute bounds: a loaded CI machine slows the toy server's event loop
    # too, but not by the queue's order of magnitude.
    light_p50, light_p99, _ = loadgen.percentiles(light.latency_ms)
    assert light_p50 >= SERVICE_MS
    # The last arrivals wait for everything queued before them: hundreds of ms, not 20.
    heavy_p50, heavy_p99, _ = loadgen.percentiles(heavy.latency_ms)
    assert heavy_p99 > 20 * SERVICE_MS and heavy_p50 > 5 * SERVICE_MS
    assert light_p50 < heavy_p50 / 2
    # Latency grows along the run as the queue does (measured from the schedule): the last
    # arrivals wait for about 75 queued requests (1.5 s), the first for none. Medians of the
    # first and last tenths, and a third of that growth, so that a stall of the machine early
    # in the run (it shifts everything after it) cannot hide or fake the trend.
    tenth = len(heavy.latency_ms) // 10
    growth = np.median(heavy.latency_ms[-tenth:]) - np.median(heavy.latency_ms[:tenth])
    assert growth > 25 * SERVICE_MS, (growth, heavy.latency_ms[:tenth])
    # The closed loop at the same server reports only the service time.
    closed_p50, closed_p99, _ = loadgen.percentiles(closed.latency_ms)
    assert closed_p50 >= SERVICE_MS and closed_p99 < heavy_p50 / 2
    assert heavy.stages_ms["total"][0] == pytest.approx(SERVICE_MS)


def test_wrong_answers_and_timeouts_are_errors_not_latencies():
    with _ToyServer(items=3) as url:
        wrong = asyncio.run(
            loadgen.open_loop(url, BODIES, 20, 0.5, warmup_s=0.0, expect_items=2, seed=2)
        )
        slow = asyncio.run(
            loadgen.open_loop(url, BODIES, 20, 0.3, warmup_s=0.0, timeout_s=0.005, seed=2)
        )
    assert wrong.ok == 0 and wrong.errors == {"wrong_item_count": wrong.sent}
    assert wrong.latency_ms == []
    assert slow.ok == 0 and slow.errors == {"timeout": slow.sent} and slow.latency_ms == []
