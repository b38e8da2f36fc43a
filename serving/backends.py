"""Where the cascade's stages run: one interface, in process or through TF Serving (REST or gRPC).

A ``Backend`` turns a manifest into a ``ModelChain``: every stage of one pushed version, in the
manifest's order, bound together. A request takes one chain for its whole life, so all its stage
calls hit the same training run even while a new version is being swapped in (see
``registry``).

The chain (``ModelChain.cascade``): the first (retrieval) stage returns its top K1 of the whole
corpus; each later (rescore) stage scores the list the previous stage kept; a stage between the
first and the last keeps its best ``keep`` (ties keep the previous stage's order); the last
stage's scores order the answer (``serving.app.encode_items``).

- ``InProcessBackend``: ``tf.saved_model.load`` of ``<serving_dir>/<stage>/<V>``; signature
  calls run in a thread pool (TF releases the GIL inside ops), concurrent requests
  micro-batched into one pass through all stages per batch (``serving.batching``).
- ``TFServingRestBackend``: TF Serving's REST predict API,
  ``POST <url>/v1/models/<stage>/versions/<V>:predict`` in the columnar ``inputs`` format.
- ``TFServingGrpcBackend``: ``tensorflow.serving.PredictionService/Predict`` over gRPC.

Every failure of a stage call surfaces as ``BackendError`` (the service answers 503).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from models import features
from serving import manifest as manifest_lib
from serving.batching import MicroBatcher

log = logging.getLogger(__name__)

SERVING_DEFAULT = "serving_default"
# Output names of serving_default per role (docs/signatures.md).
RETRIEVAL_OUTPUTS: tuple[str, ...] = ("video_id", "scores")
RANKING_OUTPUTS: tuple[str, ...] = ("scores",)  # every rescore stage


class BackendError(RuntimeError):
    """A stage call or a chain load failed (model server down, version missing, bad output)."""


def _check_outputs(
    stage: str, outputs: Mapping[str, Any], names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise BackendError(f"{stage}: response lacks output(s) {missing}; got {sorted(outputs)}")
    return {n: np.asarray(outputs[n]) for n in names}


def _check_finite(stage: str, scores: np.ndarray) -> None:
    if not np.all(np.isfinite(scores)):
        raise BackendError(f"{stage}: non-finite scores")


@dataclasses.dataclass(frozen=True)
class CascadeResult:
    """One request's pass through the chain.

    Attributes:
      video_id: int64 ``[N]`` the list the last stage scored (what the stage before it kept;
        padding dropped), in the previous stage's order.
      stage_scores: stage -> float32 ``[N]`` that stage's scores of those items, every stage in
        cascade order.
      stage_ranks: stage -> int ``[N]`` the items' 1-based ranks in that stage's list, every
        stage but the last (the answer's order is the last stage's rank).
      timings_ms: how long each step took for this request: one entry per stage (the stage
        calls of the batch it ran in), ``queue`` (waiting for a batch slot; 0 for remote
        backends) and ``batch`` (requests in that batch).
      retrieved: int64 ``[K1]`` the first stage's top K1 (padding dropped), in its order.
    """

    video_id: np.ndarray
    stage_scores: dict[str, np.ndarray]
    stage_ranks: dict[str, np.ndarray]
    timings_ms: dict[str, float]
    retrieved: np.ndarray

    @property
    def retrieval_scores(self) -> np.ndarray:
        """The first stage's scores ``[N]`` of ``video_id``."""
        return next(iter(self.stage_scores.values()))

    @property
    def ranking_scores(self) -> np.ndarray:
        """The last stage's scores ``[N]`` of ``video_id`` (what orders the answer)."""
        return list(self.stage_scores.values())[-1]


def _stable_order(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Indices sorting each row best first; ties keep the current order, invalid entries last.

    Args:
      scores: float ``[..., N]``.
      valid: bool ``[..., N]`` or None (all valid).
    """
    key = -scores.astype(np.float64)
    if valid is not None:
        key = np.where(valid, key, np.inf)
    return np.argsort(key, axis=-1, kind="stable")


class ModelChain(abc.ABC):
    """Every stage of one pushed version, in cascade order. Immutable; safe to share.

    Shapes: query features are ``[B]`` int64 (``[B, SEQ_LEN]`` for the behaviour sequence).

    Args:
      version: the pushed version (all stages share it).
      stages: stage name -> its manifest entry (``model_name``, ``version``, ``role``, ``keep``,
        ...), in cascade order.
    """

    def __init__(self, version: int, stages: dict[str, dict[str, Any]]) -> None:
        self.version = version
        self.stages = stages
        self.order: tuple[str, ...] = tuple(stages)
        if len(self.order) < 2:
            raise BackendError(f"a cascade needs at least 2 stages, got {list(self.order)}")

    @property
    def first(self) -> str:
        return self.order[0]

    @property
    def last(self) -> str:
        return self.order[-1]

    def cut_offs(self, k1: int, keep: Mapping[str, int] | None = None) -> dict[str, int | None]:
        """How many items each stage keeps: the first ``k1``, a middle stage its ``keep``
        (``keep`` overrides the manifest's; None keeps all), the last None (the request's k).

        Raises:
          ValueError: ``keep`` names a stage that is not between the first and the last.
        """
        keep = dict(keep or {})
        middle = self.order[1:-1]
        unknown = sorted(set(keep) - set(middle))
        if unknown:
            raise ValueError(
                f"keep: {unknown} not a stage between the first and the last of {list(self.order)}"
            )
        cuts: dict[str, int | None] = {self.first: int(k1)}
        for stage in middle:
            value = keep.get(stage, self.stages[stage].get("keep"))
            cuts[stage] = int(value) if value is not None else None
        cuts[self.last] = None
        return cuts

    def max_k(self, k1: int, keep: Mapping[str, int] | None = None) -> int:
        """The most items the last stage can be handed (the narrowest cut before it)."""
        return min(c for c in self.cut_offs(k1, keep).values() if c is not None)

    @abc.abstractmethod
    async def _predict(
        self, stage: str, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Calls ``stage``'s serving_default; returns the named outputs as numpy arrays."""

    async def retrieve(self, query: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The first stage's top K: ``(video_id int64 [B, K], scores float32 [B, K])``."""
        out = await self._predict(self.first, query, RETRIEVAL_OUTPUTS)
        return out["video_id"].astype(np.int64), out["scores"].astype(np.float32)

    async def rescore(
        self, stage: str, query: dict[str, np.ndarray], video_id: np.ndarray
    ) -> np.ndarray:
        """``stage``'s scores float32 ``[B, N]`` of the candidates ``video_id`` int64 ``[B, N]``."""
        out = await self._predict(stage, {**query, "video_id": video_id}, RANKING_OUTPUTS)
        scores = out["scores"].astype(np.float32)
        if scores.shape != video_id.shape:
            raise BackendError(f"{stage}: scores shape {scores.shape} != {video_id.shape}")
        return scores

    async def rank(self, query: dict[str, np.ndarray], video_id: np.ndarray) -> np.ndarray:
        """The last stage's scores float32 ``[B, N]`` of ``video_id`` ``[B, N]``."""
        return await self.rescore(self.last, query, video_id)

    async def probe(self, query: dict[str, np.ndarray]) -> None:
        """One call per stage (retrieval, then each rescore stage on 2 of its items)."""
        video_id, _ = await self.retrieve(query)
        for stage in self.order[1:]:
            await self.rescore(stage, query, video_id[:, :2])

    async def cascade(
        self, query: dict[str, np.ndarray], k1: int, keep: Mapping[str, int] | None = None
    ) -> CascadeResult:
        """The chain for one request (batch of 1): retrieval's top ``k1``, each later stage
        re-scoring what the previous kept (``cut_offs``).

        Raises:
          StageError: a stage failed (``stage`` names it).
        """
        cuts = self.cut_offs(k1, keep)
        timings: dict[str, float] = {"queue": 0.0}
        started = time.perf_counter()
        try:
            video_id, scores = await self.retrieve(query)
        except Exception as err:
            raise StageError(self.first, err) from err
        now = time.perf_counter()
        timings[self.first] = (now - started) * 1e3
        keep_mask = video_id[0, :k1] != features.PAD_ID
        ids = video_id[0, :k1][keep_mask]
        retrieved = ids
        stage_scores = {self.first: scores[0, :k1][keep_mask]}
        stage_ranks = {self.first: np.arange(1, len(ids) + 1)}
        for stage in self.order[1:]:
            begun = time.perf_counter()
            try:
                rescored = (await self.rescore(stage, query, ids[None, :]))[0]
                _check_finite(stage, rescored)
            except Exception as err:
                raise StageError(stage, err) from err
            stage_scores[stage] = rescored
            if stage != self.last:
                picked = _stable_order(rescored)[: cuts[stage]]
                ids = ids[picked]
                stage_scores = {name: v[picked] for name, v in stage_scores.items()}
                stage_ranks = {name: v[picked] for name, v in stage_ranks.items()}
                stage_ranks[stage] = np.arange(1, len(ids) + 1)
            timings[stage] = (time.perf_counter() - begun) * 1e3
        return CascadeResult(ids, stage_scores, stage_ranks, {**timings, "batch": 1.0}, retrieved)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows for this chain."""
        return {"version": self.version, "order": list(self.order), "stages": self.stages}


ModelPair = ModelChain  # the two-stage name


class StageError(RuntimeError):
    """A stage of ``ModelChain.cascade`` failed; ``stage`` names it."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


class Backend(abc.ABC):
    """Loads pairs. One instance per service; ``start``/``aclose`` run on the service's loop."""

    name: str = "backend"

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Opens connections; called once on the service's event loop."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Releases connections and threads."""

    @abc.abstractmethod
    async def load_pair(self, serving_dir: Path, manifest: dict[str, Any]) -> ModelChain:
        """Returns the chain the manifest names (every stage, in order), ready to serve.

        Raises:
          BackendError: a stage of the version cannot be loaded or is not available yet.
        """


# --- in process ------------------------------------------------------------------------------


class _InProcessPair(ModelChain):
    """Every stage's signature in this process; requests micro-batched into one pass per batch.

    ``cascade`` runs a whole batch through the chain in one executor job: the query tensors are
    built once and fed to retrieval, each stage's kept list goes to the next as it is (no trip
    through the event loop between the stages), and each stage is one signature call of
    ``[B, ...]``. ``retrieve`` / ``rescore`` batch each stage on its own (probes, other callers).
    """

    def __init__(self, version, stages, signatures, executor, max_batch: int, max_inflight: int):
        super().__init__(version, stages)
        self._signatures = signatures  # stage -> concrete serving_default function
        self._callers = {stage: _FlatCaller(fn) for stage, fn in signatures.items()}
        self._executor = executor
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        # Batchers are owned by the chain: a swapped-out chain drains its own queues.
        self.batchers = {
            stage: MicroBatcher(
                functools.partial(self._call, stage), executor, max_batch, max_inflight
            )
            for stage in signatures
        }
        self.cascade_batchers: dict[tuple, MicroBatcher] = {}  # cut-offs -> batcher

    def describe(self) -> dict[str, Any]:
        batching = {"max_batch": self._max_batch, "max_inflight": self._max_inflight}
        return {**super().describe(), "batching": batching}

    def _tensors(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        names = self._signatures[stage].structured_input_signature[1]
        missing = sorted(set(names) - set(inputs))
        if missing:
            raise BackendError(f"{stage}: serving_default needs inputs {missing} we do not send")
        return {k: v if tf.is_tensor(v) else tf.constant(v) for k, v in inputs.items()}

    def _run(self, stage: str, tensors: dict[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        try:
            return self._callers[stage](tensors)
        except (tf.errors.OpError, ValueError, TypeError) as err:
            raise BackendError(f"{stage}: {type(err).__name__}: {err}") from err

    def _call(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._run(stage, self._tensors(stage, inputs))
        return {k: v.numpy() for k, v in outputs.items()}

    async def _predict(self, stage, inputs, output_names):
        outputs = await self.batchers[stage](inputs)
        return _check_outputs(stage, outputs, output_names)

    def _rescore_batch(
        self,
        stage: str,
        tensors: dict[str, Any],
        query: dict[str, np.ndarray],
        video_id: np.ndarray,
        valid: np.ndarray,
    ) -> np.ndarray:
        """``stage``'s scores ``[B, N]`` of ``video_id`` ``[B, N]``; NaN where not ``valid``."""
        import tensorflow as tf

        if valid.all():
            out = self._run(stage, {**tensors, "video_id": tf.constant(video_id)})
            scores = np.asarray(_check_outputs(stage, out, RANKING_OUTPUTS)["scores"], np.float32)
        else:  # a corpus smaller than K1: score each request's real candidates only
            scores = np.full(video_id.shape, np.nan, np.float32)
            for row in range(len(video_id)):
                inputs = {k: v[row : row + 1] for k, v in query.items()}
                inputs["video_id"] = video_id[row : row + 1, valid[row]]
                scores[row, valid[row]] = self._call(stage, inputs)["scores"][0]
        if scores.shape != video_id.shape:
            raise BackendError(f"{stage}: scores shape {scores.shape} != {video_id.shape}")
        _check_finite(stage, scores[valid])
        return scores

    def _cascade_batch(
        self, cuts: Mapping[str, int | None], query: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The chain over a batch ``query`` ``[B, ...]`` (runs in the executor).

        Returns arrays with the batch axis first: ``video_id`` / ``valid`` ``[B, N]`` (the last
        stage's list), ``<stage>_scores`` ``[B, N]`` per stage, ``<stage>_rank`` ``[B, N]`` per
        stage but the last, ``retrieved`` ``[B, K1]``, ``<stage>_ms``, ``started``, ``batch``.
        """
        started = time.perf_counter()
        batch = len(query["user_id"])
        first = self.first
        k1 = cuts[first]
        try:
            tensors = self._tensors(first, query)
            retrieved = _check_outputs(first, self._run(first, tensors), RETRIEVAL_OUTPUTS)
        except Exception as err:
            raise StageError(first, err) from err
        now = time.perf_counter()
        per_request = np.ones(batch)
        out: dict[str, np.ndarray] = {f"{first}_ms": per_request * (now - started) * 1e3}
        video_id = retrieved["video_id"][:, :k1].astype(np.int64)
        valid = video_id != features.PAD_ID
        positions = np.broadcast_to(np.arange(1, video_id.shape[1] + 1), video_id.shape)
        scores = {first: retrieved["scores"][:, :k1].astype(np.float32)}
        ranks = {first: positions}
        out["retrieved"] = video_id
        for stage in self.order[1:]:
            begun = time.perf_counter()
            try:
                scores[stage] = self._rescore_batch(stage, tensors, query, video_id, valid)
            except Exception as err:
                raise StageError(stage, err) from err
            if stage != self.last:
                picked = _stable_order(scores[stage], valid)[:, : cuts[stage]]

                def take(values: np.ndarray, picked: np.ndarray = picked) -> np.ndarray:
                    return np.take_along_axis(values, picked, axis=1)

                video_id, valid = take(video_id), take(valid)
                scores = {name: take(v) for name, v in scores.items()}
                ranks = {name: take(v) for name, v in ranks.items()}
                ranks[stage] = np.broadcast_to(np.arange(1, picked.shape[1] + 1), picked.shape)
            out[f"{stage}_ms"] = per_request * (time.perf_counter() - begun) * 1e3
        out.update(video_id=video_id, valid=valid, started=per_request * started)
        out["batch"] = per_request * batch
        out.update({f"{name}_scores": v for name, v in scores.items()})
        out.update({f"{name}_rank": np.ascontiguousarray(v) for name, v in ranks.items()})
        return out

    async def cascade(
        self, query: dict[str, np.ndarray], k1: int, keep: Mapping[str, int] | None = None
    ) -> CascadeResult:
        cuts = self.cut_offs(k1, keep)
        key = tuple(cuts.items())
        batcher = self.cascade_batchers.get(key)
        if batcher is None:
            batcher = MicroBatcher(
                functools.partial(self._cascade_batch, cuts),
                self._executor,
                self._max_batch,
                self._max_inflight,
            )
            self.cascade_batchers[key] = batcher
        enqueued = time.perf_counter()
        out = await batcher(query)
        valid = out["valid"][0]
        timings = {"queue": max(0.0, (float(out["started"][0]) - enqueued) * 1e3)}
        timings.update({stage: float(out[f"{stage}_ms"][0]) for stage in self.order})
        timings["batch"] = float(out["batch"][0])
        retrieved = out["retrieved"][0]
        return CascadeResult(
            video_id=out["video_id"][0][valid],
            stage_scores={stage: out[f"{stage}_scores"][0][valid] for stage in self.order},
            stage_ranks={stage: out[f"{stage}_rank"][0][valid] for stage in self.order[:-1]},
            timings_ms=timings,
            retrieved=retrieved[retrieved != features.PAD_ID],
        )


class _FlatCaller:
    """Calls a loaded signature with its inputs in the signature's flat order.

    A keyword call (``signature(**tensors)``) first matches the keywords against the
    signature's structure in Python: ~0.27 ms and 0.22 ms of the calling thread's CPU per call
    on our machine (1.80 -> 1.53 ms for one query through a 1M-item ScaNN retrieval stage),
    paid under the GIL, on every stage call. The flat call skips that matching; it is TF's
    internal entry point (``_call_flat``, TensorFlow 2.15 as pinned), so a signature without
    it, or with positional inputs, is called by keyword as before.
    """

    def __init__(self, signature: Any) -> None:
        self.signature = signature
        args, kwargs = signature.structured_input_signature
        # The flat order of a dict is its sorted keys; per input its dtype and shape.
        self.specs = [(name, kwargs[name].dtype, kwargs[name].shape) for name in sorted(kwargs)]
        self.flat = None if args or not hasattr(signature, "_call_flat") else signature._call_flat

    def __call__(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        if self.flat is None or len(tensors) != len(self.specs):
            return self.signature(**tensors)
        flat = []
        for name, dtype, shape in self.specs:
            value = tensors.get(name)
            if value is None or value.dtype != dtype or not shape.is_compatible_with(value.shape):
                return self.signature(**tensors)  # it names what is missing or wrong
            flat.append(value)
        return self.flat(flat, self.signature.captured_inputs)


class InProcessBackend(Backend):
    """Every stage's SavedModel loaded with ``tf.saved_model.load`` in this process (no TF Serving).

    Args:
      max_batch: most requests one batch serves (``serving.batching``; 1 disables batching).
        None: chosen per pushed version by its retrieval index (``batch_limit``).
      max_inflight: batches running at once, each on its own worker thread. While they run,
        new requests queue and leave together as the next batch: a lone request never waits.
      intra_op_threads / inter_op_threads: TensorFlow's thread pools (None: TensorFlow's
        default, one per core). Applied when this process has not run TensorFlow yet.
    """

    name = "inprocess"

    def __init__(
        self,
        max_batch: int | None = None,
        max_inflight: int = 1,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
    ) -> None:
        if (max_batch is not None and max_batch < 1) or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be >= 1")
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.threads = (intra_op_threads, inter_op_threads)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_inflight, thread_name_prefix="lcron-tf"
        )
        # Loads run on their own thread: a hot swap must not stall the requests being served.
        self._loader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lcron-load"
        )

    async def start(self) -> None:
        configure_tf_threads(*self.threads)

    def _load(self, serving_dir: Path, manifest: dict[str, Any]) -> _InProcessPair:
        import tensorflow as tf

        from serving import custom_ops

        signatures, stages = {}, {}
        for stage, entry in manifest_lib.chain(manifest):
            path = serving_dir / entry["path"]
            try:
                custom_ops.load_for(path)
                model = tf.saved_model.load(str(path))
                signatures[stage] = model.signatures[SERVING_DEFAULT]
            except (OSError, KeyError, ValueError, tf.errors.OpError) as err:
                raise BackendError(f"{stage}: cannot load {path}: {err}") from err
            stages[stage] = _stage_entry(entry)
            stages[stage]["path"] = str(path)
        first = next(iter(stages.values()))
        max_batch = self.max_batch or batch_limit(first.get("index"))
        log.info("version %s: batches of up to %d requests", manifest["version"], max_batch)
        return _InProcessPair(
            int(manifest["version"]),
            stages,
            signatures,
            self._executor,
            max_batch,
            self.max_inflight,
        )

    async def load_pair(self, serving_dir, manifest):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._loader, functools.partial(self._load, Path(serving_dir), manifest)
        )

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)


BRUTE_FORCE_MAX_BATCH = 32


def batch_limit(index: Mapping[str, Any] | None) -> int:
    """The default most requests per batch for a version whose retrieval index is ``index``
    (the manifest's ``stages.<first>.index``).

    Brute force reads the whole item matrix once per batch whatever its size, so large batches
    amortise it: ``BRUTE_FORCE_MAX_BATCH``. A ScaNN index searches each query's own partitions,
    so a batch costs about its size times one search, and batching saves only the per-call
    overhead: a batch holds at most the index's ``query_groups`` queries, each searched on its
    own (at 1M items on 2 cores, 200 requests/s: retrieval p99 5.5 ms with batches of up to 32,
    4.5 ms with up to 4; docs/serving.md).
    """
    from models.config import IndexConfig

    if not index or index.get("kind") != "scann":
        return BRUTE_FORCE_MAX_BATCH
    # An export from before query groups: the limit of today's default.
    groups = (index.get("params") or {}).get("query_groups") or IndexConfig().query_groups
    return int(groups)


def configure_tf_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Sets TensorFlow's intra-/inter-op pool sizes if given and still possible.

    TensorFlow fixes them when its runtime starts; in a process that already ran TensorFlow
    (a test process) a different request is logged and ignored.
    """
    import tensorflow as tf

    threading_config = tf.config.threading
    for value, getter, setter in (
        (intra_op, threading_config.get_intra_op_parallelism_threads,
         threading_config.set_intra_op_parallelism_threads),
        (inter_op, threading_config.get_inter_op_parallelism_threads,
         threading_config.set_inter_op_parallelism_threads),
    ):  # fmt: skip
        if value is None or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError as err:
            log.warning("TensorFlow thread pools already fixed; keeping them (%s)", err)


def _stage_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What a chain keeps of a manifest stage entry (shown by ``GET /v1/models``)."""
    out = {"model_name": entry["model_name"], "version": int(entry["version"])}
    for key in ("role", "keep", "kind", "index"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    return out


# --- TF Serving ------------------------------------------------------------------------------


class _RemotePair(ModelChain):
    def __init__(self, version, stages, backend: _TFServingBackend) -> None:
        super().__init__(version, stages)
        self._backend = backend

    async def _predict(self, stage, inputs, output_names):
        entry = self.stages[stage]
        outputs = await self._backend.predict(
            entry["model_name"], entry["version"], SERVING_DEFAULT, inputs, output_names
        )
        return _check_outputs(stage, outputs, output_names)


class _TFServingBackend(Backend):
    """Shared part of the REST and gRPC clients: chain loading by model name and version."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s

    @abc.abstractmethod
    async def predict(
        self,
        model_name: str,
        version: int,
        signature: str,
        inputs: dict[str, np.ndarray],
        output_names: tuple[str, ...],
    ) -> dict[str, np.ndarray]:
        """One Predict call on TF Serving."""

    @abc.abstractmethod
    async def check_available(self, model_name: str, version: int) -> None:
        """Raises BackendError unless TF Serving has ``model_name`` ``version`` loaded."""

    async def load_pair(self, serving_dir, manifest):
        stages = {}
        for stage, entry in manifest_lib.chain(manifest):
            await self.check_available(entry["model_name"], int(entry["version"]))
            stages[stage] = {**_stage_entry(entry), "url": self.url}
        return _RemotePair(int(manifest["version"]), stages, self)


class TFServingRestBackend(_TFServingBackend):
    """TF Serving's REST API (``--rest_api_port``, 8501 by default) through httpx."""

    name = "tfserving-rest"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        super().__init__(url.rstrip("/"), timeout_s)
        self._client = None

    async def start(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s, limits=limits)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs) -> Any:
        import httpx

        if self._client is None:
            await self.start()
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise BackendError(f"TF Serving {path}: {type(err).__name__}: {err}") from err
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code != 200:
            raise BackendError(f"TF Serving {path}: HTTP {response.status_code}: {body}")
        return body

    async def check_available(self, model_name, version):
        body = await self._request("GET", f"/v1/models/{model_name}/versions/{version}")
        states = {
            str(s.get("version")): s.get("state") for s in body.get("model_version_status", [])
        }
        if states.get(str(version)) != "AVAILABLE":
            raise BackendError(f"TF Serving: {model_name} version {version} not available: {body}")

    async def predict(self, model_name, version, signature, inputs, output_names):
        payload = {
            "signature_name": signature,
            "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
        }
        path = f"/v1/models/{model_name}/versions/{version}:predict"
        body = await self._request("POST", path, json=payload)
        if "outputs" not in body:
            raise BackendError(f"TF Serving {path}: response has no 'outputs': {str(body)[:300]}")
        outputs = body["outputs"]
        # Columnar format: a single named output is returned bare, several as an object.
        if not isinstance(outputs, dict):
            if len(output_names) != 1:
                raise BackendError(f"TF Serving {path}: expected outputs {output_names}")
            outputs = {output_names[0]: outputs}
        return {k: np.asarray(v) for k, v in outputs.items()}


class TFServingGrpcBackend(_TFServingBackend):
    """TF Serving's gRPC ``PredictionService`` (``--port``, 8500 by default), async stub."""

    name = "tfserving-grpc"

    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        super().__init__(target, timeout_s)
        self._channel = None
        self._stub = None

    async def start(self) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self._channel = grpc.aio.insecure_channel(self.url, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _spec(self, model_name: str, version: int, signature: str = ""):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
        spec.version.value = version
        return spec

    async def _call(self, method: str, request):
        import grpc

        if self._stub is None:
            await self.start()
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise BackendError(
                f"TF Serving gRPC {method}: {err.code().name}: {err.details()}"
            ) from err

    async def check_available(self, model_name, version):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(model_name, version), metadata_field=["signature_def"]
        )
        response = await self._call("GetModelMetadata", request)
        if response.model_spec.version.value != version:
            raise BackendError(
                f"TF Serving gRPC: {model_name} answered version "
                f"{response.model_spec.version.value}, not {version}"
            )

    async def predict(self, model_name, version, signature, inputs, output_names):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(model_spec=self._spec(model_name, version, signature))
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        request.output_filter.extend(output_names)
        response = await self._call("Predict", request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def make_backend(
    kind: str,
    tfserving_url: str | None = None,
    timeout_s: float = 5.0,
    max_batch: int | None = None,
    max_inflight: int = 1,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
) -> Backend:
    """Backend by CLI name.

    Args:
      kind: "inprocess" or "tfserving".
      tfserving_url: for "tfserving": ``http(s)://host:8501`` selects the REST API,
        ``grpc://host:8500`` the gRPC PredictionService.
      timeout_s: per-call timeout of the TF Serving clients.
      max_batch / max_inflight / intra_op_threads / inter_op_threads: the in-process backend's
        batching and TensorFlow threads (``InProcessBackend``); TF Serving batches itself.
    """
    if kind == "inprocess":
        return InProcessBackend(max_batch, max_inflight, intra_op_threads, inter_op_threads)
    if kind != "tfserving":
        raise ValueError(f"backend: unknown {kind!r}; choose 'inprocess' or 'tfserving'")
    if not tfserving_url:
        raise ValueError("tfserving-url: required with --backend tfserving")
    parsed = urlparse(tfserving_url)
    if parsed.scheme in ("http", "https"):
        return TFServingRestBackend(tfserving_url, timeout_s)
    if parsed.scheme == "grpc" and parsed.netloc:
        return TFServingGrpcBackend(parsed.netloc, timeout_s)
    raise ValueError(
        f"tfserving-url: {tfserving_url!r} must be http(s)://HOST:PORT (REST) or "
        "grpc://HOST:PORT (gRPC)"
    )
