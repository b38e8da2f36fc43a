"""Backend selection by CLI name and URL scheme (no model needed)."""

from __future__ import annotations

import pytest

from serving import backends


def test_url_scheme_selects_rest_or_grpc():
    rest = backends.make_backend("tfserving", "http://tfserving:8501/")
    assert isinstance(rest, backends.TFServingRestBackend)
    assert rest.url == "http://tfserving:8501"
    grpc = backends.make_backend("tfserving", "grpc://tfserving:8500")
    assert isinstance(grpc, backends.TFServingGrpcBackend)
    assert grpc.url == "tfserving:8500"
    assert isinstance(backends.make_backend("inprocess"), backends.InProcessBackend)


@pytest.mark.parametrize(
    ("kind", "url", "named"),
    [
        ("tfserving", None, "tfserving-url"),
        ("tfserving", "tfserving:8500", "tfserving-url"),
        ("tfserving", "ftp://x:1", "tfserving-url"),
        ("torchserve", None, "backend"),
    ],
)
def test_bad_backend_settings_are_named(kind, url, named):
    with pytest.raises(ValueError, match=named):
        backends.make_backend(kind, url)
