"""uvicorn, with SIGTERM/SIGINT draining open streams before it shuts down, and a clean exit.

uvicorn's own handling closes WebSockets at once with 1012 and then re-raises the signal (the process
dies of it); here the first SIGTERM or SIGINT drains (`app.drain`) and then lets uvicorn finish its
in-flight HTTP requests and exit with status 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn

from ser_jax.serve.app import create_app, drain
from ser_jax.serve.service import Service


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service
        self._drain: asyncio.Task | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self._drain is not None:  # The second signal: stop now.
            self.should_exit = self.force_exit = True
            return
        self._drain = asyncio.get_running_loop().create_task(drain(self.service))
        self._drain.add_done_callback(lambda _: setattr(self, "should_exit", True))


def serve(service: Service, *, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False) -> None:
    """Serves until SIGTERM/SIGINT; returns after draining."""
    config = uvicorn.Config(create_app(service), host=host, port=port, access_log=access_log,
                            ws_max_size=service.limits.max_message_bytes, ws_per_message_deflate=False,
                            timeout_graceful_shutdown=max(1, int(service.limits.drain_s)),
                            log_level="info" if access_log else "warning")  # Not a line per connection.
    print(f"serving {service.source} on http://{host}:{port} once {len(service.batcher.buckets)} batch sizes "
          f"are compiled", flush=True)
    DrainingServer(config, service).run()
