"""`WebSocket /v1/stream`: live estimates for one stream of raw PCM, computed as `predict --stream` does.

The protocol (JSON text messages, PCM as binary messages):

    client: {"rate": 48000, "format": "f32le", "channels": 1, "smoothing": 1}   (first message)
    server: {"type": "ready", "sample_rate": 16000, "window_s": 3.0, "hop_s": 0.5, "class_names": [...]}
    client: PCM bytes, chunks of any size (interleaved samples, any number of messages)
    server: {"type": "estimate", "time": 0.5, "start": 0.0, "label": "sad", "probabilities": {...}}  per hop
    client: {"type": "end"}
    server: the remaining estimates (the last window included), {"type": "end", "audio_s": ...}, close 1000

The audio is decoded by `streaming.PcmDecoder` and windowed by `streaming.StreamingClassifier`, the
very objects the command line uses; only the model call differs: each window goes to the shared
micro-batcher. A reader task feeds windows in and a writer task sends estimates in order as their
batches come back, so a stream keeps sending while its earlier windows are being classified.

A stream that breaks the protocol or a limit gets {"type": "error", "error": why} and is closed with
the reason: 1003 for bad settings or garbage samples, 1008 for too fast, too long or idle, 1009
(from uvicorn) for an oversized message, 1013 when the server is at capacity, 1001 when it shuts down
(after its last estimates), 1011 if the model fails. Its queued windows are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ser_jax import streaming
from ser_jax.serve.limits import RealTimePace
from ser_jax.serve.service import Service

UNSUPPORTED, POLICY, INTERNAL, TRY_LATER, GOING_AWAY = 1003, 1008, 1011, 1013, 1001
MAX_ABS_SAMPLE = 64.0  # Real audio is within [-1, 1]; far beyond it the bytes are not the declared format.
SETTINGS_EXAMPLE = '{"rate": 16000, "format": "s16le", "channels": 1, "smoothing": 1}'


class StreamClosed(Exception):
    """Ends a stream with a WebSocket close code and a reason the client is sent."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def parse_settings(text: str | None) -> dict:
    """The first message -> {"rate", "format", "channels", "smoothing"}, or StreamClosed naming the problem."""
    if text is None:
        raise StreamClosed(UNSUPPORTED, f"the first message must be the JSON settings, e.g. {SETTINGS_EXAMPLE}")
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        settings = None
    if not isinstance(settings, dict):
        raise StreamClosed(UNSUPPORTED, f"settings are not a JSON object; send e.g. {SETTINGS_EXAMPLE}")
    unknown = sorted(set(settings) - {"rate", "format", "channels", "smoothing"})
    if unknown:
        raise StreamClosed(UNSUPPORTED, f"unknown settings {unknown}; known: rate, format, channels, smoothing")
    settings = {"channels": 1, "smoothing": 1, **settings}
    checks = {"rate": (1000, 384000), "channels": (1, 32), "smoothing": (1, 100)}
    for key, (low, high) in checks.items():
        value = settings.get(key)
        if type(value) is not int or not low <= value <= high:
            raise StreamClosed(UNSUPPORTED, f"{key} must be an integer from {low} to {high}, got {value!r}")
    if settings.get("format") not in streaming.PCM_FORMATS:
        raise StreamClosed(UNSUPPORTED, f"format must be one of {sorted(streaming.PCM_FORMATS)}, "
                                        f"got {settings.get('format')!r}")
    return settings


class StreamSession:
    """One open stream: settings, then PCM in and estimates out until it ends, breaks a rule or the server drains."""

    def __init__(self, websocket: WebSocket, service: Service):
        self.ws, self.service = websocket, service
        self._pending: asyncio.Queue = asyncio.Queue()  # (window, future) in order; None ends the writer.
        self._reader: asyncio.Task | None = None

    def drain(self) -> None:
        """Server shutdown: stop reading; the stream still gets the estimates of what it sent, then 1001."""
        if self._reader:
            self._reader.cancel()

    async def run(self) -> None:
        writer = None
        try:
            async with asyncio.timeout(self.service.limits.idle_timeout_s):
                first = await self.ws.receive()
            _raise_if_disconnected(first)
            settings = parse_settings(first.get("text"))
            sr = self.service.sample_rate
            decoder = streaming.PcmDecoder(settings["rate"], settings["format"], settings["channels"], sr)
            classifier = streaming.StreamingClassifier(
                None, self.service.predictor.class_names, sample_rate=sr, window_samples=self.service.window_samples,
                hop_samples=self.service.hop_samples, smoothing=settings["smoothing"],
                min_samples=self.service.predictor.features.win_length)
            await self._send({"type": "ready", **{k: v for k, v in self.service.describe().items()
                                                  if k in ("sample_rate", "window_s", "hop_s", "class_names")}})
            writer = asyncio.create_task(self._write(classifier))
            self._reader = asyncio.create_task(self._read(decoder, classifier, settings))
            await asyncio.wait([self._reader, writer], return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # Only a failed send or model call ends the writer early.
                self._reader.cancel()
                await writer
            drained = self._reader.cancelled()
            if not drained:
                self._reader.result()  # Re-raises the reader's StreamClosed or disconnect.
            for window in classifier.windows(decoder.decode(b"", last=True)):  # The resampler's tail.
                self._queue(window)
            self._queue(classifier.final_window())
            self._pending.put_nowait(None)
            await writer
            await self._send({"type": "end", "audio_s": classifier.heard / sr})
            await self._close(GOING_AWAY if drained else 1000, "server shutting down" if drained else "end of stream")
        except TimeoutError:
            await self._fail(POLICY, f"no message for {self.service.limits.idle_timeout_s:g} s")
        except StreamClosed as e:
            await self._fail(e.code, e.reason)
        except WebSocketDisconnect:
            pass  # The client went away: nobody to tell.
        except Exception as e:  # The model failed: say so rather than hang up silently.
            await self._fail(INTERNAL, f"internal error: {type(e).__name__}")
            raise
        finally:
            for task in (self._reader, writer):
                if task and not task.done():
                    task.cancel()
            while not self._pending.empty():  # Frees this stream's queued windows (the batcher skips them).
                item = self._pending.get_nowait()
                if item:
                    item[1].cancel()

    async def _read(self, decoder: streaming.PcmDecoder, classifier: streaming.StreamingClassifier,
                    settings: dict) -> None:
        """Receives until the client's end message; queues each window as it falls due."""
        limits = self.service.limits
        pace = RealTimePace(limits.burst_s, limits.max_speed)
        bytes_per_second = decoder.frame * settings["rate"]
        received = 0
        while True:
            async with asyncio.timeout(limits.idle_timeout_s):
                message = await self.ws.receive()
            _raise_if_disconnected(message)
            if message.get("bytes") is None:
                if _is_end(message.get("text")):
                    return
                raise StreamClosed(UNSUPPORTED, 'text messages after the settings must be {"type": "end"}; '
                                                "audio goes in binary messages")
            received += len(message["bytes"])
            audio_s = received / bytes_per_second
            if too_fast := pace.excess(audio_s):
                raise StreamClosed(POLICY, too_fast)
            if audio_s > limits.max_stream_s:
                raise StreamClosed(POLICY, f"stream longer than the limit of {limits.max_stream_s:g} s")
            samples = decoder.decode(message["bytes"])
            if samples.size and not (np.all(np.isfinite(samples)) and np.abs(samples).max() <= MAX_ABS_SAMPLE):
                raise StreamClosed(UNSUPPORTED, f"garbage audio: NaN, infinite or far out of [-1, 1] samples; "
                                                f"is it really {settings['format']}?")
            for window in classifier.windows(samples):
                self._queue(window)

    def _queue(self, window: streaming.DueWindow | None) -> None:
        if window is not None:
            self._pending.put_nowait((window, self.service.batcher.submit(window.waveform, window.num_samples)))

    async def _write(self, classifier: streaming.StreamingClassifier) -> None:
        """Sends each window's estimate in order (smoothing needs the order) as its batch comes back."""
        while (item := await self._pending.get()) is not None:
            window, future = item
            estimate = classifier.estimate(window, await future)
            await self._send({"type": "estimate", **estimate.as_dict()})

    async def _send(self, message: dict) -> None:
        await self.ws.send_text(json.dumps(message))

    async def _fail(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):  # The client may already be gone.
            await self._send({"type": "error", "error": reason})
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, _close_reason(reason))


async def refuse(websocket: WebSocket, reason: str) -> None:
    """Accepts and closes at once with 1013, so the client learns why (a refused handshake says nothing)."""
    await websocket.accept()
    await websocket.send_text(json.dumps({"type": "error", "error": reason}))
    await websocket.close(TRY_LATER, _close_reason(reason))


def _is_end(text: str | None) -> bool:
    try:
        return json.loads(text or "") == {"type": "end"}
    except json.JSONDecodeError:
        return False


def _raise_if_disconnected(message: dict) -> None:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))


def _close_reason(reason: str) -> str:
    """A close frame holds at most 123 bytes of reason; the full text went in the error message."""
    encoded = reason.encode()
    return reason if len(encoded) <= 123 else encoded[:120].decode(errors="ignore") + "..."
