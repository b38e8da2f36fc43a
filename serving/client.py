"""A small Python client of the cascade service.

from serving.client import CascadeClient

with CascadeClient("http://127.0.0.1:8080") as client:
    result = client.recommend({"user_id": 1, "device_id": 1, "age": 3, "gender": 1,
                               "province": 2}, k=10)
    for item in result["items"]:
        print(item["video_id"], item["ranking_score"])
"""

from __future__ import annotations

from typing import Any

import httpx


class CascadeError(RuntimeError):
    """The service answered with an error; ``status`` and the JSON ``error`` object attached."""

    def __init__(self, status: int, error: dict[str, Any], retry_after: str | None) -> None:
        field = error.get("field")
        where = f" ({field})" if field else ""
        super().__init__(f"HTTP {status}: {error.get('message')}{where}")
        self.status = status
        self.error = error
        self.retry_after = retry_after


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 200:
        return response.json()
    try:
        error = response.json().get("error") or {"message": response.text}
    except ValueError:
        error = {"message": response.text}
    raise CascadeError(response.status_code, error, response.headers.get("Retry-After"))


class CascadeClient:
    """Synchronous client; a context manager keeping one connection pool."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def recommend(self, user: dict[str, Any], k: int = 10) -> dict[str, Any]:
        """``POST /v1/recommend``: ``{"items": [...], "versions": {...}}``.

        Raises:
          CascadeError: 4xx (the error names the field) or 503 (``retry_after`` set).
        """
        return _result(self._http.post("/v1/recommend", json={"user": user, "k": k}))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the paired version in use."""
        return _result(self._http.get("/v1/models"))

    def healthy(self) -> bool:
        """True when the service has a pair loaded."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CascadeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCascadeClient:
    """Asynchronous twin of ``CascadeClient`` (for load generators and async callers)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", timeout_s: float = 10.0) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits)

    async def recommend_response(self, user: dict[str, Any], k: int = 10) -> httpx.Response:
        """The raw response (headers included, e.g. ``Server-Timing``)."""
        return await self._http.post("/v1/recommend", json={"user": user, "k": k})

    async def recommend(self, user: dict[str, Any], k: int = 10) -> dict[str, Any]:
        return _result(await self.recommend_response(user, k))

    async def models(self) -> dict[str, Any]:
        return _result(await self._http.get("/v1/models"))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCascadeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
