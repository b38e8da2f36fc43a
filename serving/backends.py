"""Where the two stages run: one interface, in process or through TF Serving (REST or gRPC).

A ``Backend`` turns a manifest into a ``ModelPair``: both stages of one pushed version, bound
together. A request takes one pair for its whole life, so its retrieval and ranking calls always
hit the same training run even while a new pair is being swapped in (see ``registry``).

- ``InProcessBackend``: ``tf.saved_model.load`` of ``<serving_dir>/{retrieval,ranking}/<V>``;
  signature calls run in a thread pool (TF releases the GIL inside ops), concurrent requests
  micro-batched into one call per stage (``serving.batching``).
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
# Output names of serving_default per stage (docs/signatures.md).
RETRIEVAL_OUTPUTS: tuple[str, ...] = ("video_id", "scores")
RANKING_OUTPUTS: tuple[str, ...] = ("scores",)


class BackendError(RuntimeError):
    """A stage call or a pair load failed (model server down, version missing, bad output)."""


def _check_outputs(
    stage: str, outputs: Mapping[str, Any], names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise BackendError(f"{stage}: response lacks output(s) {missing}; got {sorted(outputs)}")
    return {n: np.asarray(outputs[n]) for n in names}


@dataclasses.dataclass(frozen=True)
class CascadeResult:
    """One request's pass through both stages.

    Attributes:
      video_id: int64 ``[N]`` retrieval's top-K1 (padding dropped), in retrieval's order.
      retrieval_scores: float32 ``[N]`` retrieval's scores of those items.
      ranking_scores: float32 ``[N]`` ranking's scores of those items.
      timings_ms: how long each step took for this request: ``retrieval``, ``ranking`` (the
        stage calls of the batch it ran in), ``queue`` (waiting for a batch slot; 0 for remote
        backends) and ``batch`` (requests in that batch).
    """

    video_id: np.ndarray
    retrieval_scores: np.ndarray
    ranking_scores: np.ndarray
    timings_ms: dict[str, float]


class ModelPair(abc.ABC):
    """Both stages of one pushed version. Immutable; safe to share between requests.

    Shapes: query features are ``[B]`` int64 (``[B, SEQ_LEN]`` for the behaviour sequence).
    """

    def __init__(self, version: int, stages: dict[str, dict[str, Any]]) -> None:
        self.version = version
        self.stages = stages

    @abc.abstractmethod
    async def _predict(
        self, stage: str, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Calls ``stage``'s serving_default; returns the named outputs as numpy arrays."""

    async def retrieve(self, query: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Retrieval's top-K: ``(video_id int64 [B, K], scores float32 [B, K])``, best first."""
        out = await self._predict("retrieval", query, RETRIEVAL_OUTPUTS)
        return out["video_id"].astype(np.int64), out["scores"].astype(np.float32)

    async def rank(self, query: dict[str, np.ndarray], video_id: np.ndarray) -> np.ndarray:
        """Ranking's scores float32 ``[B, N]`` of the candidates ``video_id`` int64 ``[B, N]``."""
        out = await self._predict("ranking", {**query, "video_id": video_id}, RANKING_OUTPUTS)
        scores = out["scores"].astype(np.float32)
        if scores.shape != video_id.shape:
            raise BackendError(f"ranking: scores shape {scores.shape} != {video_id.shape}")
        return scores

    async def cascade(self, query: dict[str, np.ndarray], k1: int) -> CascadeResult:
        """Retrieval's top-``k1`` for one request (batch of 1), re-scored by ranking.

        Raises:
          StageError: a stage failed (``stage`` names it).
        """
        t0 = time.perf_counter()
        try:
            video_id, retrieval_scores = await self.retrieve(query)
        except Exception as err:
            raise StageError("retrieval", err) from err
        t1 = time.perf_counter()
        keep = video_id[0, :k1] != features.PAD_ID
        candidates = video_id[:, :k1][:, keep]
        try:
            ranking_scores = await self.rank(query, candidates)
        except Exception as err:
            raise StageError("ranking", err) from err
        t2 = time.perf_counter()
        timings = {"queue": 0.0, "retrieval": (t1 - t0) * 1e3, "ranking": (t2 - t1) * 1e3}
        return CascadeResult(
            candidates[0],
            retrieval_scores[0, :k1][keep],
            ranking_scores[0],
            {**timings, "batch": 1.0},
        )

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows for this pair."""
        return {"version": self.version, "stages": self.stages}


class StageError(RuntimeError):
    """A stage of ``ModelPair.cascade`` failed; ``stage`` is "retrieval" or "ranking"."""

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
    async def load_pair(self, serving_dir: Path, manifest: dict[str, Any]) -> ModelPair:
        """Returns the pair the manifest names, ready to serve.

        Raises:
          BackendError: a stage of the version cannot be loaded or is not available yet.
        """


# --- in process ------------------------------------------------------------------------------


class _InProcessPair(ModelPair):
    """Both signatures in this process; requests micro-batched into one pass per batch.

    ``cascade`` runs a whole batch through both stages in one executor job: the query tensors
    are built once and fed to retrieval, retrieval's top-K1 goes to ranking as it is (no trip
    through the event loop between the stages), and each stage is one signature call of
    ``[B, ...]``. ``retrieve`` / ``rank`` batch each stage on its own (probes, other callers).
    """

    def __init__(self, version, stages, signatures, executor, max_batch: int, max_inflight: int):
        super().__init__(version, stages)
        self._signatures = signatures  # stage -> concrete serving_default function
        self._executor = executor
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        # Batchers are owned by the pair: a swapped-out pair drains its own queues.
        self.batchers = {
            stage: MicroBatcher(
                functools.partial(self._call, stage), executor, max_batch, max_inflight
            )
            for stage in signatures
        }
        self.cascade_batchers: dict[int, MicroBatcher] = {}  # k1 -> batcher

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
            return self._signatures[stage](**tensors)
        except (tf.errors.OpError, ValueError, TypeError) as err:
            raise BackendError(f"{stage}: {type(err).__name__}: {err}") from err

    def _call(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._run(stage, self._tensors(stage, inputs))
        return {k: v.numpy() for k, v in outputs.items()}

    async def _predict(self, stage, inputs, output_names):
        outputs = await self.batchers[stage](inputs)
        return _check_outputs(stage, outputs, output_names)

    def _cascade_batch(self, k1: int, query: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Both stages over a batch ``query`` ``[B, ...]`` (runs in the executor)."""
        import tensorflow as tf

        started = time.perf_counter()
        batch = len(query["user_id"])
        try:
            tensors = self._tensors("retrieval", query)
            retrieved = _check_outputs(
                "retrieval", self._run("retrieval", tensors), RETRIEVAL_OUTPUTS
            )
        except Exception as err:
            raise StageError("retrieval", err) from err
        t1 = time.perf_counter()
        video_id = retrieved["video_id"][:, :k1].astype(np.int64)
        retrieval_scores = retrieved["scores"][:, :k1].astype(np.float32)
        valid = video_id != features.PAD_ID
        try:
            if valid.all():
                ranked = self._run("ranking", {**tensors, "video_id": tf.constant(video_id)})
                ranking_scores = _check_outputs("ranking", ranked, RANKING_OUTPUTS)["scores"]
            else:  # a corpus smaller than K1: rank each request's real candidates only
                ranking_scores = np.full(video_id.shape, np.nan, np.float32)
                for row in range(batch):
                    inputs = {k: v[row : row + 1] for k, v in query.items()}
                    inputs["video_id"] = video_id[row : row + 1, valid[row]]
                    scores = self._call("ranking", inputs)["scores"]
                    ranking_scores[row, valid[row]] = scores[0]
            ranking_scores = np.asarray(ranking_scores, np.float32)
            if ranking_scores.shape != video_id.shape:
                raise BackendError(
                    f"ranking: scores shape {ranking_scores.shape} != {video_id.shape}"
                )
        except Exception as err:
            raise StageError("ranking", err) from err
        t2 = time.perf_counter()
        per_request = np.ones(batch)
        return {
            "video_id": video_id,
            "retrieval_scores": retrieval_scores,
            "ranking_scores": ranking_scores,
            "valid": valid,
            "started": per_request * started,
            "retrieval_ms": per_request * (t1 - started) * 1e3,
            "ranking_ms": per_request * (t2 - t1) * 1e3,
            "batch": per_request * batch,
        }

    async def cascade(self, query: dict[str, np.ndarray], k1: int) -> CascadeResult:
        batcher = self.cascade_batchers.get(k1)
        if batcher is None:
            batcher = MicroBatcher(
                functools.partial(self._cascade_batch, k1),
                self._executor,
                self._max_batch,
                self._max_inflight,
            )
            self.cascade_batchers[k1] = batcher
        enqueued = time.perf_counter()
        out = await batcher(query)
        keep = out["valid"][0]
        timings = {
            "queue": max(0.0, (float(out["started"][0]) - enqueued) * 1e3),
            "retrieval": float(out["retrieval_ms"][0]),
            "ranking": float(out["ranking_ms"][0]),
            "batch": float(out["batch"][0]),
        }
        return CascadeResult(
            out["video_id"][0][keep],
            out["retrieval_scores"][0][keep],
            out["ranking_scores"][0][keep],
            timings,
        )


class InProcessBackend(Backend):
    """Both SavedModels loaded with ``tf.saved_model.load`` in this process (no TF Serving).

    Args:
      max_batch: most requests one batch serves (``serving.batching``; 1 disables batching).
      max_inflight: batches running at once, each on its own worker thread. While they run,
        new requests queue and leave together as the next batch: a lone request never waits.
      intra_op_threads / inter_op_threads: TensorFlow's thread pools (None: TensorFlow's
        default, one per core). Applied when this process has not run TensorFlow yet.
    """

    name = "inprocess"

    def __init__(
        self,
        max_batch: int = 32,
        max_inflight: int = 1,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
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
        for stage in manifest_lib.STAGES:
            entry = manifest["stages"][stage]
            path = serving_dir / entry["path"]
            try:
                custom_ops.load_for(path)
                model = tf.saved_model.load(str(path))
                signatures[stage] = model.signatures[SERVING_DEFAULT]
            except (OSError, KeyError, ValueError, tf.errors.OpError) as err:
                raise BackendError(f"{stage}: cannot load {path}: {err}") from err
            stages[stage] = {"model_name": entry["model_name"], "version": int(entry["version"])}
            stages[stage]["path"] = str(path)
            if "index" in entry:
                stages[stage]["index"] = entry["index"]
        return _InProcessPair(
            int(manifest["version"]),
            stages,
            signatures,
            self._executor,
            self.max_batch,
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


# --- TF Serving ------------------------------------------------------------------------------


class _RemotePair(ModelPair):
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
    """Shared part of the REST and gRPC clients: pair loading by model name and version."""

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
        for stage in manifest_lib.STAGES:
            entry = manifest["stages"][stage]
            name, version = entry["model_name"], int(entry["version"])
            await self.check_available(name, version)
            stages[stage] = {"model_name": name, "version": version, "url": self.url}
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
    max_batch: int = 32,
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
