"""Adaptive micro-batching of concurrent requests into one signature call (in-process backend).

TF Serving batches on its own (``--enable_batching``); in process we do it here. No timer: at
most ``max_inflight`` batches run at once, and requests arriving meanwhile wait and leave
together as the next batch (up to ``max_batch`` rows). A lone request therefore runs at once,
and under load the batch size grows with the queue, so each stage runs one ``[B, ...]`` call
instead of B calls (retrieval's brute-force matmul over the corpus gains most).

Only requests whose inputs have the same shapes past the batch axis are batched together (the
ranking stage's candidate count may differ), so no padding ever changes a model's input.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


def _shape_key(inputs: Arrays) -> tuple:
    return tuple(sorted((name, value.shape[1:]) for name, value in inputs.items()))


class MicroBatcher:
    """Batches calls of ``run(inputs) -> outputs`` (dicts of arrays, batch axis first).

    Args:
      run: a blocking function over a batch, run in ``executor``; every output's first axis is
        the batch axis.
      executor: where ``run`` runs (TF releases the GIL inside ops).
      max_batch: most rows in one call; 1 disables batching.
      max_inflight: most calls running at once.
    """

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        executor: concurrent.futures.Executor,
        max_batch: int = 32,
        max_inflight: int = 2,
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be >= 1")
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._pending: list[tuple[Arrays, asyncio.Future]] = []
        self._inflight = 0
        self.batch_sizes: list[int] = []  # for tests and diagnostics (last 1000)

    async def __call__(self, inputs: Arrays) -> Arrays:
        """Runs ``inputs`` (batch axis first), possibly together with concurrent calls."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((inputs, future))
        self._dispatch(loop)
        return await future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._pending and self._inflight < self.max_inflight:
            key = _shape_key(self._pending[0][0])
            batch, rest, rows = [], [], 0
            for item in self._pending:
                n = len(next(iter(item[0].values())))
                fits = not batch or rows + n <= self.max_batch  # a lone oversize call runs alone
                if fits and _shape_key(item[0]) == key:
                    batch.append(item)
                    rows += n
                else:
                    rest.append(item)
            self._pending = rest
            self._inflight += 1
            loop.create_task(self._execute(batch, loop))

    async def _execute(self, batch: list[tuple[Arrays, asyncio.Future]], loop) -> None:
        try:
            if len(batch) == 1:
                inputs = batch[0][0]
            else:
                inputs = {k: np.concatenate([b[0][k] for b in batch]) for k in batch[0][0]}
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
            self.batch_sizes = [*self.batch_sizes[-999:], len(batch)]
            start = 0
            for item_inputs, future in batch:
                n = len(next(iter(item_inputs.values())))
                if not future.done():  # the request may have been cancelled meanwhile
                    future.set_result({k: v[start : start + n] for k, v in outputs.items()})
                start += n
        except Exception as err:  # every request of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
        finally:
            self._inflight -= 1
            self._dispatch(loop)
