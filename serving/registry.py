"""The cascade in service: polls the push manifest and swaps to a new N-tuple atomically.

Swap protocol: a new manifest version is loaded through the backend (every stage the manifest
names, in its order) and probed with one request per stage *before* it replaces the current
chain, by a single reference assignment. A request reads ``registry.current`` once and keeps that
chain for all its stages, so requests in flight during a swap finish on the old chain and no
request mixes two training runs. A chain that fails to load, answer or pass ``check`` is not
swapped in; the previous chain stays in service and the next poll retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models import features
from serving import manifest as manifest_lib
from serving.backends import Backend, BackendError, ModelChain

log = logging.getLogger(__name__)


def probe_query(batch: int = 1) -> dict[str, np.ndarray]:
    """A request of zeros with an empty behaviour sequence (out-of-vocabulary everywhere)."""
    query = {
        name: np.zeros([batch], np.int64)
        for name in features.RETRIEVAL_QUERY_FEATURES
        if name not in features.SEQUENCE_FEATURES
    }
    for name in features.SEQUENCE_FEATURES:
        query[name] = np.full([batch, features.SEQ_LEN], features.PAD_ID, np.int64)
    return query


class PairRegistry:
    """Holds the current ``ModelChain`` and keeps it in step with ``manifest.json``.

    Args:
      check: called on a loaded chain before it is swapped in (e.g. the service's per-stage
        cut-offs must name its stages); a ValueError keeps the previous chain.
    """

    def __init__(
        self,
        serving_dir: str | Path,
        backend: Backend,
        poll_interval_s: float = 2.0,
        on_swap: Callable[[ModelChain], None] | None = None,
        on_reload_failure: Callable[[str], None] | None = None,
        check: Callable[[ModelChain], None] | None = None,
    ) -> None:
        self.serving_dir = Path(serving_dir)
        self.backend = backend
        self.poll_interval_s = poll_interval_s
        self.current: ModelChain | None = None
        self.loaded_at: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._on_swap = on_swap
        self._on_reload_failure = on_reload_failure
        self._check = check
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> bool:
        """Loads the manifest's chain if its version differs from the current one.

        Returns:
          True when a new chain was swapped in.
        """
        async with self._lock:  # one load at a time; polls never overlap
            try:
                manifest = manifest_lib.read_manifest(self.serving_dir)
            except FileNotFoundError:
                self.last_error = f"no {manifest_lib.MANIFEST_FILE} in {self.serving_dir} yet"
                return False
            except (OSError, ValueError) as err:
                return self._failed(f"manifest: {err}")
            version = int(manifest["version"])
            if self.current is not None and self.current.version == version:
                return False
            started = time.perf_counter()
            try:
                pair = await self.backend.load_pair(self.serving_dir, manifest)
                if self._check is not None:
                    self._check(pair)
                await pair.probe(probe_query())
            except (BackendError, OSError, ValueError, KeyError) as err:
                return self._failed(f"version {version}: {err}")
            previous = self.current.version if self.current is not None else None
            self.current = pair  # the atomic swap
            self.manifest = manifest
            self.loaded_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            self.last_error = None
            log.info(
                "serving cascade %s version %d (was %s), loaded in %.2fs",
                list(pair.order),
                version,
                previous,
                time.perf_counter() - started,
            )
            if self._on_swap is not None:
                self._on_swap(pair)
            return True

    def _failed(self, message: str) -> bool:
        self.last_error = message
        log.warning("cascade reload failed, keeping version %s: %s", self.version, message)
        if self._on_reload_failure is not None:
            self._on_reload_failure(message)
        return False

    @property
    def version(self) -> int | None:
        return self.current.version if self.current is not None else None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # the poller must outlive any surprise; the old chain keeps serving
                log.exception("unexpected error while polling %s", self.serving_dir)

    async def start(self) -> None:
        """Loads the current chain (if any) and starts polling."""
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="lcron-manifest-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
