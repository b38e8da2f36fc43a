"""The online cascade service: the manifest's chain of N stages, top-k of the last returned.

Retrieval's top-K1 from the corpus; each later stage re-scores what the previous kept (a
middle stage keeps its ``keep``); the last stage's best k are the answer.

Endpoints (docs/serving.md has the full reference):

- ``POST /v1/recommend``: ``{"user": {...}, "k": 10}`` -> ``{"items": [...], "versions": {...}}``
  (each item has ``<stage>_score`` and ``<stage>_rank`` per stage; ``Server-Timing`` has one
  entry per stage).
- ``GET /healthz``: 200 once a cascade is loaded, else 503.
- ``GET /v1/models``: the version in use, the stage order and where each stage runs.
- ``GET /metrics``: Prometheus exposition (see ``serving.metrics``).

Errors are JSON ``{"error": {"type", "field", "message"}}``: 422 for a missing, unknown or wrongly
typed field or ``k`` out of range, 400 for malformed JSON, 413 for a body over the limit, 503 with
``Retry-After`` when no pair is loaded or a backend call fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from models import features
from serving.backends import Backend, BackendError, CascadeResult, ModelChain, StageError
from serving.metrics import ServiceMetrics
from serving.registry import PairRegistry

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
Sequence50 = Annotated[list[Int64], Field(max_length=features.SEQ_LEN)]
ENDPOINTS = ("/v1/recommend", "/healthz", "/v1/models", "/metrics")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Knobs of the service.

    Attributes:
      serving_dir: the push dir holding ``manifest.json``.
      k1: how many of retrieval's top items the next stage re-scores (capped by retrieval's
        export K).
      stage_keep: stage -> how many items it keeps, for stages between the first and the last
        (default: the ``keep`` the manifest records for the stage, its training cut-off).
      max_k: the largest ``k`` a request may ask for (default: ``k1``; a request's k is also
        capped by the narrowest middle-stage cut-off).
      max_body_bytes: larger request bodies get 413.
      poll_interval_s: how often the manifest is checked for a new pair.
      retry_after_s: the ``Retry-After`` hint of 503 answers.
    """

    serving_dir: Path
    k1: int = 100
    stage_keep: Mapping[str, int] = dataclasses.field(default_factory=dict)
    max_k: int | None = None
    max_body_bytes: int = 64 * 1024
    poll_interval_s: float = 2.0
    retry_after_s: int = 1

    @property
    def k_limit(self) -> int:
        return self.max_k if self.max_k is not None else self.k1


class User(BaseModel):
    """Request-time user/context features (``features.RETRIEVAL_QUERY_FEATURES``), raw ids."""

    model_config = ConfigDict(strict=True, extra="forbid")

    user_id: Int64
    device_id: Int64
    age: Int64
    gender: Int64
    province: Int64
    request_timestamp: Int64 | None = None  # ms since the epoch; default: now
    seq_video_id: Sequence50 | None = None  # most recent first, <= SEQ_LEN
    seq_author_id: Sequence50 | None = None
    seq_category_level_two: Sequence50 | None = None


class RecommendRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    user: User
    k: Annotated[int, Field(strict=True, ge=1)] = 10


class FieldError(ValueError):
    """A request field is invalid; becomes a 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnavailableError(RuntimeError):
    """No cascade to serve, or a backend call failed; becomes a 503 with Retry-After."""


def build_query(user: User, now_ms: int | None = None) -> dict[str, np.ndarray]:
    """Serving inputs (batch of 1) for one user: scalars ``[1]``, sequences ``[1, SEQ_LEN]``.

    Sequences are padded with ``PAD_ID`` to ``SEQ_LEN``; given sequences must be equally long
    (position i of each describes the same past view).
    """
    timestamp = user.request_timestamp
    if timestamp is None:
        timestamp = int(time.time() * 1000) if now_ms is None else now_ms
    query = {
        "request_timestamp": np.array([timestamp], np.int64),
        "user_id": np.array([user.user_id], np.int64),
        "device_id": np.array([user.device_id], np.int64),
        "age": np.array([user.age], np.int64),
        "gender": np.array([user.gender], np.int64),
        "province": np.array([user.province], np.int64),
    }
    given = {n: getattr(user, n) for n in features.SEQUENCE_FEATURES if getattr(user, n)}
    lengths = {len(v) for v in given.values()}
    if len(lengths) > 1:
        first = next(iter(given))
        for name, values in given.items():
            if len(values) != len(given[first]):
                raise FieldError(
                    f"user.{name}",
                    f"has {len(values)} items but user.{first} has {len(given[first])}; "
                    "behaviour sequences must be equally long",
                )
    for name in features.SEQUENCE_FEATURES:
        row = np.full([1, features.SEQ_LEN], features.PAD_ID, np.int64)
        values = given.get(name, [])
        row[0, : len(values)] = values
        query[name] = row
    return query


def encode_items(result: CascadeResult, k: int, pair: ModelChain) -> bytes:
    """The JSON answer: the ``k`` best items by the last stage's score (ties keep the previous
    stage's order), each with every stage's score and rank (``<stage>_score``,
    ``<stage>_rank``)."""
    last = pair.order[-1]
    scores = result.stage_scores[last]
    # Stable sort on the negated score: equal scores keep the previous stage's order.
    order = np.argsort(-scores, kind="stable")[:k]
    columns = {"video_id": result.video_id[order].tolist()}
    for stage in pair.order:
        columns[f"{stage}_score"] = result.stage_scores[stage][order].tolist()
        ranks = result.stage_ranks.get(stage)
        columns[f"{stage}_rank"] = (
            [int(r) for r in ranks[order]] if stage != last else list(range(1, len(order) + 1))
        )
    items = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    versions = {stage: info["version"] for stage, info in pair.stages.items()}
    return orjson.dumps({"items": items, "versions": {"pair": pair.version, **versions}})


def _field_name(loc: Sequence[Any]) -> str:
    parts = [p for p in loc if p != "body"] if loc and loc[0] == "body" else list(loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def error_response(
    status: int, kind: str, field: str | None, message: str, **extra: Any
) -> JSONResponse:
    headers = extra.pop("headers", None)
    body = {"error": {"type": kind, "field": field, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


class _EdgeMiddleware:
    """Pure ASGI: rejects oversize bodies with 413 before parsing; counts requests by status."""

    def __init__(self, app, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}

        async def send_counting(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, too_large = await self._read_body(scope, receive)
                if too_large:
                    self.metrics.errors.labels("request", "validation").inc()
                    response = error_response(
                        413,
                        "body_too_large",
                        "body",
                        f"request body exceeds {self.max_body_bytes} bytes",
                    )
                    await response(scope, receive, send_counting)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_counting)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()

    async def _read_body(self, scope, receive) -> tuple[bytes, bool]:
        for name, value in scope.get("headers", []):
            too_large = value.isdigit() and int(value) > self.max_body_bytes
            if name == b"content-length" and too_large:
                return b"", True
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def create_app(config: ServiceConfig, backend: Backend) -> FastAPI:
    """The FastAPI app of the cascade service over ``backend``."""
    metrics = ServiceMetrics()

    def on_swap(pair) -> None:
        metrics.pair_version.set(pair.version)
        metrics.reloads.labels("ok").inc()

    def on_failure(_message: str) -> None:
        metrics.reloads.labels("failed").inc()
        metrics.errors.labels("reload", "reload").inc()

    def check(pair: ModelChain) -> None:
        pair.cut_offs(config.k1, config.stage_keep)  # the cut-offs must name its stages

    registry = PairRegistry(
        config.serving_dir,
        backend,
        poll_interval_s=config.poll_interval_s,
        on_swap=on_swap,
        on_reload_failure=on_failure,
        check=check,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await backend.start()
        await registry.start()
        try:
            yield
        finally:
            await registry.stop()
            await backend.aclose()

    app = FastAPI(title="LCRON cascade service", version="1", lifespan=lifespan)
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.config = config
    retry_headers = {"Retry-After": str(config.retry_after_s)}

    def validation_response(raw_errors: Sequence[dict[str, Any]]) -> JSONResponse:
        metrics.errors.labels("request", "validation").inc()
        if any(e.get("type") == "json_invalid" for e in raw_errors):
            return error_response(400, "invalid_json", "body", "body is not valid JSON")
        errors = [
            {"field": _field_name(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in raw_errors
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return error_response(
            422, "invalid_request", first["field"], first["message"], errors=errors
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, err: RequestValidationError):
        return validation_response(err.errors())

    @app.exception_handler(FieldError)
    async def on_field_error(_request: Request, err: FieldError):
        metrics.errors.labels("request", "validation").inc()
        return error_response(422, "invalid_request", err.field, err.message)

    @app.exception_handler(UnavailableError)
    async def on_unavailable(_request: Request, err: UnavailableError):
        return error_response(503, "unavailable", None, str(err), headers=retry_headers)

    @app.post("/v1/recommend")
    async def recommend(http_request: Request) -> Response:
        started = time.perf_counter()
        # Parsed here rather than by FastAPI: JSON is accepted whatever the Content-Type says,
        # and every error names its field the same way.
        try:
            request = RecommendRequest.model_validate_json(await http_request.body() or b"{}")
        except pydantic.ValidationError as err:
            return validation_response(err.errors())
        if request.k > config.k_limit:
            raise FieldError("k", f"must be in [1, {config.k_limit}], got {request.k}")
        query = build_query(request.user)
        pair = registry.current  # held for every stage: one training run per request
        if pair is None:
            metrics.errors.labels("request", "unavailable").inc()
            raise UnavailableError(f"no model loaded yet ({registry.last_error})")
        narrowest = pair.max_k(config.k1, config.stage_keep)
        if request.k > narrowest:
            raise FieldError(
                "k",
                f"must be in [1, {narrowest}], got {request.k}: the cascade "
                f"{list(pair.order)} hands its last stage at most {narrowest} items",
            )
        try:
            result = await pair.cascade(query, config.k1, config.stage_keep)
            if not np.all(np.isfinite(result.ranking_scores)):
                raise StageError(pair.last, BackendError("non-finite scores"))
        except StageError as err:  # any backend failure is a 503, never a crash
            metrics.errors.labels(err.stage, "backend").inc()
            if not isinstance(err.error, BackendError):
                log.error("%s stage failed", err.stage, exc_info=err.error)
            raise UnavailableError(f"{err.stage} stage failed: {err.error}") from err
        timings = result.timings_ms
        for stage in pair.order:
            metrics.latency.labels(stage).observe(timings[stage] / 1e3)
        metrics.queue.observe(timings["queue"] / 1e3)
        metrics.batch_size.observe(timings["batch"])

        body = encode_items(result, request.k, pair)
        total = time.perf_counter() - started
        metrics.latency.labels("end_to_end").observe(total)
        timing = ", ".join(
            [
                f"queue;dur={timings['queue']:.3f}",
                *(f"{stage};dur={timings[stage]:.3f}" for stage in pair.order),
                f"total;dur={total * 1e3:.3f}",
                f'batch;desc="{int(timings["batch"])}"',
            ]
        )
        return Response(body, media_type="application/json", headers={"Server-Timing": timing})

    @app.get("/healthz")
    async def healthz() -> Response:
        if registry.current is None:
            return JSONResponse(
                {"status": "unavailable", "detail": registry.last_error},
                status_code=503,
                headers=retry_headers,
            )
        return JSONResponse({"status": "ok", "version": registry.current.version})

    @app.get("/v1/models")
    async def models() -> Response:
        pair = registry.current
        manifest = registry.manifest or {}
        described = pair.describe() if pair else {}
        return JSONResponse(
            {
                "backend": backend.name,
                "version": pair.version if pair else None,
                "order": list(pair.order) if pair else [],
                "stages": described.get("stages", {}),
                "batching": described.get("batching"),
                "pushed_at": manifest.get("pushed_at"),
                "loaded_at": registry.loaded_at,
                "last_reload_error": registry.last_error,
            }
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(_EdgeMiddleware, max_body_bytes=config.max_body_bytes, metrics=metrics)
    return app
