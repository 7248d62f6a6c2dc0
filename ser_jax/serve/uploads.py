"""`POST /v1/predict`: one audio file in, the emotion of the whole clip (and of each window of it) out.

The body is the file itself, or a multipart form with the file in field `file`; anything libsndfile
reads, at any rate and channel count. The answer is what `Predictor.predict` returns for the clip
(the whole-clip path of evaluation, run beside the batcher so a compile for a new clip length never
stalls the streams), plus `duration_s` and, for clips longer than the model's window, `segments`:
consecutive windows [0, w), [w, 2w), ..., the last one ending at the clip's end, each classified by
the micro-batcher together with the streams' windows (after them: the streams are live).

Problems are 4xx JSON `{"error": why, "status": code}`: 400 empty or no `file` field, 413 over the
size limit, 415 undecodable, 422 unusable audio (NaN, silent, too short), 503 when the server is at
capacity or shutting down.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse

from ser_jax import audio
from ser_jax.serve.service import Service


class UploadRejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def error_response(status: int, reason: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": reason, "status": status}, status_code=status, headers=headers)


def segment_starts(num_samples: int, window: int) -> list[int]:
    """Starts of the windows that cover a clip longer than `window`: every `window` samples, the last
    one moved back to end at the clip's end (so every segment is a full window)."""
    starts = list(range(0, num_samples - window, window))
    return starts + [num_samples - window]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadRejected(413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise UploadRejected(413, f"upload is over the limit of {limit} bytes")
    return bytes(body)


async def _file_bytes(request: Request, body: bytes, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and name: the body itself, or a multipart form's `file` field."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, "<upload>"

    async def stream():
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=8,
                                     max_part_size=limit).parse()
    except MultiPartException as e:
        raise UploadRejected(400, f"malformed multipart form: {e.message}") from e
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise UploadRejected(400, "multipart upload needs the audio file in a field named 'file'")
    try:
        return await upload.read(), upload.filename or "<upload>"
    finally:
        await upload.close()


def _decode(service: Service, data: bytes, name: str) -> tuple[np.ndarray, float]:
    """In a worker thread: bytes -> (mono waveform at the model's rate, duration in seconds)."""
    try:
        wave, rate = audio.decode_audio(data, name)
    except audio.AudioError as e:
        raise UploadRejected(400 if not data else 415, e.reason) from e
    try:
        mono = service.predictor.prepare(wave, rate, name)
    except audio.AudioError as e:
        raise UploadRejected(422, e.reason) from e
    return mono, wave.shape[0] / rate


async def predict(request: Request, service: Service) -> JSONResponse:
    if refusal := service.refusal():
        return error_response(503, refusal)
    if service.uploads.locked():
        return error_response(503, f"server busy: {service.limits.max_uploads} uploads in progress")
    async with service.uploads:
        try:
            body = await _read_body(request, service.limits.max_upload_bytes)
            data, name = await _file_bytes(request, body, service.limits.max_upload_bytes)
            wave, duration = await asyncio.to_thread(_decode, service, data, name)
        except UploadRejected as e:
            return error_response(e.status, e.reason)
        return JSONResponse(await _classify(service, wave, duration))


async def _classify(service: Service, wave: np.ndarray, duration: float) -> dict:
    predictor, window = service.predictor, service.window_samples
    loop = asyncio.get_running_loop()
    whole = loop.run_in_executor(service.clips, lambda: predictor.probabilities([predictor.clip_features(wave)])[0])
    starts = segment_starts(wave.size, window) if wave.size > window else []
    segments = [service.batcher.submit(wave[s:s + window], window, bulk=True) for s in starts]
    result = {**predictor.result(await whole), "duration_s": duration}
    if starts:
        sr = service.sample_rate
        result["segments"] = [{"start": s / sr, "end": (s + window) / sr, **predictor.result(p)}
                              for s, p in zip(starts, await asyncio.gather(*segments))]
    return result
