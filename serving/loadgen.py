"""Load generator for the cascade service: open loop at a fixed arrival rate, or closed loop.

Open loop (what ``wrk2`` and practitioners' load tests do): request ``i`` is *scheduled* at time
``t_i`` of an arrival process fixed in advance (Poisson: exponential gaps of mean ``1/rate``; or
constant: ``i / rate``) and its latency is measured **from ``t_i``**, not from when it was
actually sent. A slow answer therefore cannot slow the generator down and hide the queue behind
it (coordinated omission): requests that had to wait for a free connection, or that the
generator itself sent late, count their wait. ``lag`` reports how late the generator sent
(its own health: a large lag means the generator, not the service, was saturated).

Closed loop: ``concurrency`` workers, each sending its next request when the previous answer
arrives; latency from the send. Kept for comparison: it hides queueing by construction.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (requests pre-encoded,
responses parsed by Content-Length) so the generator spends little CPU per request; it runs in
its own process (``python -m serving.loadgen``), never in the service's.

    python -m serving.loadgen --url http://127.0.0.1:8080 --bodies bodies.json \
        --rate 300 --duration 10 --warmup 2 --out result.json

``bodies.json``: a JSON list of request bodies (objects), sent round-robin to ``--path``.
``--expect-items K``: an answer counts as correct only with status 200 and ``K`` items.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import resource
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

import numpy as np

ARRIVALS = ("poisson", "constant")
MAX_IDLE_S = 3.0  # reuse a keep-alive connection only if idle for less (server closes at 5 s)


def synthetic_user(rng: np.random.Generator) -> dict:
    """A random request user (ids outside most vocabularies, a behaviour sequence of 0-50
    videos): load for a service whose logged users are not at hand."""
    seq = rng.integers(0, 10**6, size=int(rng.integers(0, 51))).tolist()
    return {
        "user_id": int(rng.integers(0, 50_000)),
        "device_id": int(rng.integers(0, 50_000)),
        "age": int(rng.integers(0, 8)),
        "gender": int(rng.integers(0, 3)),
        "province": int(rng.integers(0, 34)),
        "seq_video_id": seq,
        "seq_author_id": [v % 5000 for v in seq],
        "seq_category_level_two": [v % 200 for v in seq],
    }


def arrival_offsets(rate: float, duration_s: float, arrival: str, seed: int = 0) -> np.ndarray:
    """Send times (seconds from the start) of an arrival process of ``rate`` requests/s.

    Args:
      rate: mean arrivals per second (> 0).
      duration_s: the schedule covers ``[0, duration_s)``.
      arrival: "poisson" (exponential gaps, i.e. a Poisson process) or "constant" (``i/rate``).
      seed: seed of the Poisson gaps.

    Returns:
      float64 ``[n]``, increasing.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration_s must be > 0")
    if arrival == "constant":
        return np.arange(int(rate * duration_s)) / rate
    if arrival != "poisson":
        raise ValueError(f"arrival: {arrival!r} is not one of {ARRIVALS}")
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s * 1.2) + 100  # enough gaps to cover the window
    offsets = np.cumsum(rng.exponential(1.0 / rate, n))
    while offsets[-1] < duration_s:  # vanishingly rare: extend
        offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(rng.exponential(1 / rate, n))])
    return offsets[offsets < duration_s]


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` header -> {metric: duration ms}; a metric with a numeric ``desc``
    and no ``dur`` (``batch;desc="8"``) gives that number."""
    out = {}
    for part in header.split(","):
        name, *params = part.strip().split(";")
        for param in params:
            key, _, value = param.strip().partition("=")
            if key in ("dur", "desc") and name.strip():
                with contextlib.suppress(ValueError):
                    out[name.strip()] = float(value.strip('"'))
                    break
    return out


class _Connection:
    """One HTTP/1.1 keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def stale(self, now: float, max_idle_s: float) -> bool:
        """Closed by the server, or idle long enough that the server may close it any moment
        (uvicorn closes keep-alive connections idle for 5 s)."""
        closed = self.reader.at_eof() or self.writer.is_closing()
        return closed or now - self.idle_since > max_idle_s

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


def encode_post(host: str, path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST of a JSON body (keep-alive)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclasses.dataclass
class LoadResult:
    """What one load run measured (milliseconds; one entry per successful request)."""

    mode: str
    target_rate: float | None
    arrival: str | None
    concurrency: int | None
    duration_s: float
    sent: int = 0  # recorded requests (after the warmup)
    sent_total: int = 0  # every request, warmup included
    ok: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    latency_ms: list[float] = dataclasses.field(default_factory=list)
    lag_ms: list[float] = dataclasses.field(default_factory=list)
    stages_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    connections: int = 0
    generator_cpu_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class _Client:
    def __init__(
        self,
        url: str,
        path: str,
        bodies: Sequence[bytes],
        expect_items: int | None,
        timeout_s: float,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"url: {url!r} must be http://HOST:PORT")
        self.host, self.port = parsed.hostname, parsed.port or 80
        netloc = f"{self.host}:{self.port}"
        self.requests = [encode_post(netloc, path, b) for b in bodies]
        if not self.requests:
            raise ValueError("bodies: need at least one request body")
        self.expect_items = expect_items
        self.timeout_s = timeout_s
        self.idle: list[_Connection] = []
        self.opened = 0

    async def acquire(self, max_connections: int, freed: asyncio.Condition) -> _Connection:
        now = asyncio.get_running_loop().time()
        while True:
            while self.idle:  # most recently used first: busy connections stay warm
                connection = self.idle.pop()
                if not connection.stale(now, MAX_IDLE_S):
                    return connection
                connection.close()
                self.opened -= 1
            if self.opened < max_connections:
                self.opened += 1
                try:
                    return await _Connection.open(self.host, self.port)
                except OSError:
                    self.opened -= 1
                    raise
            async with freed:
                await freed.wait()

    async def send(
        self, i: int, result: LoadResult | None, connection: _Connection
    ) -> tuple[bool, bool]:
        """Sends request ``i``; records errors and stage timings in ``result`` (None: record
        nothing). Returns (answered correctly, connection reusable); the caller records the
        latency."""
        record = result.error if result is not None else (lambda _kind: None)
        try:
            status, headers, body = await asyncio.wait_for(
                connection.request(self.requests[i % len(self.requests)]), self.timeout_s
            )
        except asyncio.TimeoutError:
            record("timeout")
            return False, False
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
            record(type(err).__name__)
            return False, False
        reusable = headers.get(b"connection", b"") != b"close"
        if status != 200:
            record(f"http_{status}")
            return False, reusable
        if self.expect_items is not None:
            try:
                count = len(json.loads(body)["items"])
            except (ValueError, KeyError, TypeError):
                count = -1
            if count != self.expect_items:
                record("bad_body" if count < 0 else "wrong_item_count")
                return False, reusable
        if result is not None:
            timing = server_timing(headers.get(b"server-timing", b"").decode())
            for name, ms in timing.items():
                result.stages_ms.setdefault(name, []).append(ms)
            result.ok += 1
        return True, reusable


async def open_loop(
    url: str,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    *,
    arrival: str = "poisson",
    warmup_s: float = 2.0,
    path: str = "/v1/recommend",
    expect_items: int | None = None,
    max_connections: int = 256,
    timeout_s: float = 2.0,
    seed: int = 0,
) -> LoadResult:
    """Sends requests at ``rate``/s for ``warmup_s`` (not recorded) then ``duration_s``.

    Latency of request i = answer time - its scheduled time (see module docstring). A request
    that finds no idle connection opens one (up to ``max_connections``) or waits for one; the
    wait counts. Timeouts and non-200 answers are errors, never latencies.
    """
    client = _Client(url, path, bodies, expect_items, timeout_s)
    result = LoadResult("open", rate, arrival, None, duration_s)
    offsets = arrival_offsets(rate, warmup_s + duration_s, arrival, seed)
    loop = asyncio.get_running_loop()
    freed = asyncio.Condition()
    # Pre-open the connections a Poisson burst needs at this rate (more open on demand).
    warm = min(max_connections, max(4, int(rate * 0.02) + 4))
    client.idle = [await _Connection.open(client.host, client.port) for _ in range(warm)]
    client.opened = warm
    for connection in client.idle:
        connection.idle_since = loop.time()

    async def one(i: int, scheduled: float, record: bool) -> None:
        try:
            connection = await client.acquire(max_connections, freed)
        except OSError as err:
            if record:
                result.error(type(err).__name__)
            return
        sent = loop.time()
        ok, reusable = await client.send(i, result if record else None, connection)
        if record and ok:
            result.latency_ms.append((loop.time() - scheduled) * 1e3)
            result.lag_ms.append((sent - scheduled) * 1e3)
        if reusable:
            connection.idle_since = loop.time()
            client.idle.append(connection)
        else:
            connection.close()
            client.opened -= 1
        async with freed:
            freed.notify()

    tasks = []
    start = loop.time() + 0.01
    cpu0 = _cpu_seconds()
    for i, offset in enumerate(offsets.tolist()):
        scheduled = start + offset
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        record = offset >= warmup_s
        result.sent += record
        result.sent_total += 1
        tasks.append(loop.create_task(one(i, scheduled, record)))
    await asyncio.gather(*tasks)
    result.wall_s = loop.time() - start - warmup_s
    result.generator_cpu_s = _cpu_seconds() - cpu0
    result.connections = client.opened
    for connection in client.idle:
        connection.close()
    return result


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    *,
    warmup_s: float = 2.0,
    path: str = "/v1/recommend",
    expect_items: int | None = None,
    timeout_s: float = 2.0,
) -> LoadResult:
    """``concurrency`` workers send back to back; latency from each send (hides queueing)."""
    client = _Client(url, path, bodies, expect_items, timeout_s)
    result = LoadResult("closed", None, None, concurrency, duration_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop = measure_from + duration_s
    cpu0 = _cpu_seconds()

    async def worker(w: int) -> None:
        connection = await _Connection.open(client.host, client.port)
        i = w
        while loop.time() < stop:
            sent = loop.time()
            record = sent >= measure_from
            result.sent += record
            result.sent_total += 1
            ok, reusable = await client.send(i, result if record else None, connection)
            if record and ok:
                result.latency_ms.append((loop.time() - sent) * 1e3)
                result.lag_ms.append(0.0)
            i += concurrency
            if not reusable:
                connection.close()
                connection = await _Connection.open(client.host, client.port)
        connection.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result.wall_s = loop.time() - measure_from
    result.generator_cpu_s = _cpu_seconds() - cpu0
    result.connections = concurrency
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99, 99.9)) -> list[float]:
    """Percentiles (linear interpolation); NaN for no values."""
    if not len(values):
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, np.float64), qs)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT of the service")
    parser.add_argument("--bodies", required=True, help="JSON list of request bodies")
    parser.add_argument("--path", default="/v1/recommend")
    parser.add_argument("--rate", type=float, help="open loop: arrivals per second")
    parser.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    parser.add_argument("--concurrency", type=int, help="closed loop: workers (instead of rate)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first")
    parser.add_argument("--expect-items", type=int, default=None)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the raw result as JSON here (else a summary)")
    args = parser.parse_args(argv)
    if (args.rate is None) == (args.concurrency is None):
        parser.error("give exactly one of --rate (open loop) and --concurrency (closed loop)")
    with open(args.bodies, encoding="utf-8") as f:
        bodies = [json.dumps(b, separators=(",", ":")).encode() for b in json.load(f)]
    if args.rate is not None:
        run = open_loop(
            args.url,
            bodies,
            args.rate,
            args.duration,
            arrival=args.arrival,
            warmup_s=args.warmup,
            path=args.path,
            expect_items=args.expect_items,
            max_connections=args.max_connections,
            timeout_s=args.timeout,
            seed=args.seed,
        )
    else:
        run = closed_loop(
            args.url,
            bodies,
            args.concurrency,
            args.duration,
            warmup_s=args.warmup,
            path=args.path,
            expect_items=args.expect_items,
            timeout_s=args.timeout,
        )
    result = asyncio.run(run)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(result), f)
    else:
        p50, p99, p999 = percentiles(result.latency_ms)
        print(
            f"{result.mode}: sent {result.sent}, ok {result.ok}, errors {result.errors}, "
            f"{result.ok / max(result.wall_s, 1e-9):.1f}/s, latency p50 {p50:.2f} "
            f"p99 {p99:.2f} p99.9 {p999:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
