"""Starting and stopping a real `python -m ser_jax.serve` process on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(workdir: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """The server on a free 127.0.0.1 port, once /healthz answers; (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ser_jax.serve", "--workdir", workdir, "--port", str(port),
                             *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz").status_code == 200:
                return proc, url
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{proc.stdout.read()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> str:
    """SIGTERM; returns the server's output once it has exited (killed if it does not within a minute)."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out
