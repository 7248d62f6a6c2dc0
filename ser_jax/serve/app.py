"""The Starlette application: routes, start-up (compile every bucket before the first request) and draining."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ser_jax.serve import streams, uploads
from ser_jax.serve.service import Service, model_version


def create_app(service: Service) -> Starlette:
    page = importlib.resources.files("ser_jax.serve").joinpath("static/index.html").read_text()
    started = time.monotonic()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def healthz(request: Request) -> JSONResponse:
        status = 503 if service.draining else 200
        return JSONResponse({"status": "draining" if service.draining else "ok", "streams": len(service.streams),
                             "pending_windows": service.batcher.pending}, status_code=status)

    async def model(request: Request) -> JSONResponse:
        return JSONResponse(service.describe())

    async def stats(request: Request) -> JSONResponse:
        """Counters for the load benchmark: batches, model time, and CPU time of the event loop's thread
        (all the serving work: sockets, decoding, framing, queueing, JSON) against the whole process."""
        return JSONResponse({"uptime_s": time.monotonic() - started, "streams": len(service.streams),
                             "pending_windows": service.batcher.pending, **service.batcher.stats.as_dict(),
                             "event_loop_cpu_s": time.thread_time(), "process_cpu_s": time.process_time()})

    async def predict(request: Request) -> JSONResponse:
        return await uploads.predict(request, service)

    async def stream(websocket: WebSocket) -> None:
        if refusal := service.refusal(new_stream=True):
            await streams.refuse(websocket, refusal)
            return
        await websocket.accept()
        session = streams.StreamSession(websocket, service)
        service.streams.add(session)
        try:
            await session.run()
        finally:
            service.streams.discard(session)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.version = await asyncio.to_thread(model_version, service.predictor)
        await asyncio.to_thread(service.batcher.warm_up)
        service.batcher.start()
        yield
        await service.batcher.stop()
        service.clips.shutdown(wait=True)

    return Starlette(routes=[
        Route("/", index), Route("/healthz", healthz), Route("/v1/model", model), Route("/v1/stats", stats),
        Route("/v1/predict", predict, methods=["POST"]), WebSocketRoute("/v1/stream", stream),
    ], lifespan=lifespan)


async def drain(service: Service) -> None:
    """SIGTERM: refuse new work, let open streams get their last estimates (up to `drain_s`)."""
    service.draining = True
    for session in list(service.streams):
        session.drain()
    deadline = time.monotonic() + service.limits.drain_s
    while service.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
