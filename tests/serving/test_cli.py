"""``lcron serve`` in its own process: loads the pushed pair there, binds loopback by default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lcron_serve_in_a_fresh_process(pushed, direct, helpers):
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--serving-dir", str(pushed)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--poll-interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "lcron serve did not become healthy"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        user = helpers.make_user(helpers.users[7], seq=helpers.known[6:8])
        from serving.client import CascadeClient, CascadeError

        with CascadeClient(url) as client:
            result = client.recommend(user, k=5)
            assert client.models()["version"] == 1
            with pytest.raises(CascadeError) as err:
                client.recommend({**user, "age": "3"})
        helpers.assert_items_equal(result["items"], direct.expected(1, user, 5))
        assert err.value.status == 422 and err.value.error["field"] == "user.age"
        # Loopback only unless told: the port is not open on another local address.
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://{other}:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tfserving_backend_needs_a_url(tmp_path):
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--serving-dir", str(tmp_path)]
    proc = subprocess.run([*cmd, "--backend", "tfserving"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "tfserving-url" in proc.stdout + proc.stderr
