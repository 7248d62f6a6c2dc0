"""The emotion server, tested as a client sees it: a real `python -m ser_jax.serve` process on 127.0.0.1,
real HTTP (httpx) and WebSocket (websockets) clients, the session's tiny angry-vs-sad model.

One server serves the whole module (small limits, so each limit is reachable quickly); the SIGTERM
test starts its own, since it stops it.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from data_prep.corpora import synthetic
from ser_jax import predict, streaming
from ser_jax.predictor import Predictor
from ser_jax.serve import service

from live_server import start_server, stop_server

SR = 16000
LIMITS = {"max_streams": 4, "max_upload_bytes": 400_000, "max_stream_s": 6, "burst_s": 8,
          "idle_timeout_s": 3, "max_message_bytes": 200_000}


@pytest.fixture(scope="module")
def server(angry_sad_workdir):
    flags = [f"--{k}={v}" for k, v in LIMITS.items()] + ["--buckets=1,4"]
    proc, url = start_server(angry_sad_workdir, *flags)
    yield url
    out = stop_server(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]  # No request ever crashed a handler.


@pytest.fixture(scope="module")
def predictor(angry_sad_workdir):
    return Predictor.from_workdir(angry_sad_workdir)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Unseen speakers' utterances (the model trained on speakers 1-6) and a 7.3 s sad-angry-sad clip."""
    c = {e: synthetic.synthesize(e, 9, 0, sample_rate=SR) for e in ("angry", "sad")}
    c["long"] = np.concatenate([c["sad"], synthetic.synthesize("angry", 9, 1, sample_rate=SR), c["sad"]])
    return c


def wav_bytes(wave: np.ndarray, sr: int = SR, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    sf.write(out, wave, sr, subtype=subtype, format=fmt)
    return out.getvalue()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/stream"


def talk(url: str, settings, chunks, *, end: bool = True, pause_s: float = 0.0) -> tuple[list[dict], int, str]:
    """Sends the settings (a dict, or a raw message) and the chunks; returns (messages, close code, close reason)."""
    messages = []
    with connect(ws_url(url), open_timeout=30) as ws:
        try:
            ws.send(json.dumps(settings) if isinstance(settings, dict) else settings)
            for chunk in chunks:
                ws.send(chunk)
                time.sleep(pause_s)
            if end:
                ws.send(json.dumps({"type": "end"}))
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed as e:
            with contextlib.suppress(TimeoutError, ConnectionClosed):  # What was sent before the close.
                while True:
                    messages.append(json.loads(ws.recv(timeout=0)))
            return messages, e.rcvd.code if e.rcvd else 1006, e.rcvd.reason if e.rcvd else ""


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def s16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def expected_estimates(predictor: Predictor, wave: np.ndarray, smoothing: int = 1) -> list[dict]:
    """What `predict --stream` computes for a 16 kHz waveform sent as s16le (its StreamingClassifier and
    batch-1 window function)."""
    wave = np.frombuffer(s16(wave), "<i2") / np.float32(32768)
    stream = streaming.StreamingClassifier(predictor.window_function(3 * SR), predictor.class_names, sample_rate=SR,
                                           window_samples=3 * SR, hop_samples=SR // 2, smoothing=smoothing,
                                           min_samples=predictor.features.win_length)
    return [e.as_dict() for e in streaming.run(stream, [wave])]


def assert_same_estimates(got: list[dict], expected: list[dict]) -> None:
    assert [(e["time"], e["start"]) for e in got] == [(e["time"], e["start"]) for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(list(g["probabilities"].values()), list(e["probabilities"].values()), atol=1e-5)
        assert list(g["probabilities"]) == list(e["probabilities"])
        if abs(max(e["probabilities"].values()) - 0.5) > 1e-4:  # Not a near-tie.
            assert g["label"] == e["label"]


# -- Whole files --------------------------------------------------------------------------------------


def test_predict_returns_what_the_predictor_returns(server, predictor, clips):
    stereo_441 = wav_bytes(np.stack([x := _resampled(clips["angry"], 44100), 0.5 * x], 1), 44100, fmt="FLAC")
    uploads = {"multipart 16 kHz WAV": {"files": {"file": ("angry.wav", wav_bytes(clips["angry"]), "audio/wav")}},
               "raw body 44.1 kHz stereo FLAC": {"content": stereo_441},
               "raw body 7.3 s WAV": {"content": wav_bytes(clips["long"])}}
    for what, request in uploads.items():
        data = request["files"]["file"][1] if "files" in request else request["content"]
        wave, sr = sf.read(io.BytesIO(data), dtype="float32")  # As the server decodes it.
        expected = predictor.predict(wave, sr)
        r = httpx.post(server + "/v1/predict", timeout=60, **request)
        assert r.status_code == 200, (what, r.text)
        got = r.json()
        assert got["label"] == expected["label"], what
        assert list(got["probabilities"]) == list(predictor.class_names)
        np.testing.assert_allclose(list(got["probabilities"].values()), list(expected["probabilities"].values()),
                                   atol=1e-6, err_msg=what)
        assert got["duration_s"] == pytest.approx(wave.shape[0] / sr)
        assert ("segments" in got) == (got["duration_s"] > 3.0), what
    # The long clip's segments: full 3 s windows every 3 s, the last one ending at the clip's end, each
    # equal to the window function on that window (so equal to a stream's estimate ending there).
    starts = [0, 3 * SR, wave.size - 3 * SR]
    assert [(s["start"], s["end"]) for s in got["segments"]] == [(s / SR, s / SR + 3.0) for s in starts]
    windows = np.stack([wave[s:s + 3 * SR] for s in starts])
    expected = np.asarray(predictor.window_function(3 * SR)(windows, np.full(3, 3 * SR)))
    np.testing.assert_allclose([list(s["probabilities"].values()) for s in got["segments"]], expected, atol=1e-5)
    assert [s["label"] for s in got["segments"]] == [predictor.class_names[i] for i in expected.argmax(1)]


def _resampled(wave: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(wave, SR, rate).astype(np.float32)


def test_model_health_and_page(server, predictor):
    model = httpx.get(server + "/v1/model").json()
    assert model["class_names"] == list(predictor.class_names) and model["sample_rate"] == SR
    assert (model["window_s"], model["hop_s"]) == (3.0, 0.5)
    assert len(model["model_version"]) == 12 and model["checkpoint_step"] == predictor.step
    assert model["test_time_speeds"] == list(predictor.info.test_time_speeds)
    read_faster = Predictor(predictor.info, predictor.graphdef, predictor.params, predictor.batch_stats,
                            test_time_speeds=(1.0, 1.1))
    assert service.model_version(read_faster) != model["model_version"]  # Other answers, another version.
    assert model["prior_correction"] == predictor.info.prior_correction == 1.0  # The recipe's, as trained.
    uncorrected = Predictor(predictor.info, predictor.graphdef, predictor.params, predictor.batch_stats,
                            prior_correction=0.0)
    assert service.model_version(uncorrected) != model["model_version"]
    assert model["batching"]["buckets"] == [1, 4]
    assert httpx.get(server + "/healthz").json()["status"] == "ok"
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/stream" in page.text and "/v1/predict" in page.text and "getUserMedia" in page.text


# -- Streams ----------------------------------------------------------------------------------------


def test_stream_gives_the_estimates_of_predict_stream_for_a_file(server, angry_sad_workdir, predictor, clips,
                                                                  tmp_path):
    # 2.4 s sad, then 4.1 s angry: the first windows hear sad only, the last one angry only.
    wave = np.concatenate([clips["sad"], clips["angry"], synthetic.synthesize("angry", 9, 1, sample_rate=SR)])
    path = str(tmp_path / "sad_then_angry.wav")
    sf.write(path, wave, SR, subtype="PCM_16")
    out = tmp_path / "cli.jsonl"
    assert predict.main(["--workdir", angry_sad_workdir, "--stream", "--smoothing", "2", path,
                         "--output", str(out)]) == 0
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    # Odd-sized chunks split samples across messages; the decoder must put them back together.
    messages, code, reason = talk(server, {"rate": SR, "format": "s16le", "channels": 1, "smoothing": 2},
                                  pieces(s16(sf.read(path, dtype="float32")[0]), 3001))
    assert (code, reason) == (1000, "end of stream")
    assert messages[0]["type"] == "ready" and messages[-1] == {"type": "end", "audio_s": wave.size / SR}
    estimates = [m for m in messages if m["type"] == "estimate"]
    assert_same_estimates(estimates, cli)
    assert estimates[1]["label"] == "sad" and estimates[-1]["label"] == "angry"


def test_stream_resamples_and_downmixes_as_predict_stream_does_on_stdin(server, angry_sad_workdir, clips, tmp_path,
                                                                       monkeypatch):
    x = _resampled(clips["angry"], 44100)
    pcm = np.stack([x, 0.25 * x], 1).astype("<f4").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    out = tmp_path / "cli.jsonl"
    assert predict.main(["--workdir", angry_sad_workdir, "--stream", "-", "--stdin_rate", "44100",
                         "--stdin_format", "f32le", "--stdin_channels", "2", "--output", str(out)]) == 0
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    messages, code, _ = talk(server, {"rate": 44100, "format": "f32le", "channels": 2}, pieces(pcm, 17640))
    assert code == 1000
    estimates = [m for m in messages if m["type"] == "estimate"]
    assert_same_estimates(estimates, cli)
    assert estimates[-1]["label"] == "angry"


# -- Bad input and overload ----------------------------------------------------------------------------


class GoodStream(threading.Thread):
    """A well-behaved client streaming at about real time while the bad ones are dealt with."""

    def __init__(self, url: str, wave: np.ndarray):
        super().__init__(daemon=True)
        self.url, self.wave, self.result = url, wave, None

    def run(self):
        self.result = talk(self.url, {"rate": SR, "format": "s16le"}, pieces(s16(self.wave), SR // 5),
                           pause_s=0.1)


@pytest.fixture
def good_stream(server, predictor, clips):
    """Yields while a good stream runs; then checks it got exactly its estimates."""
    wave = np.concatenate([clips["sad"], clips["angry"]])
    stream = GoodStream(server, wave)
    stream.start()
    yield
    stream.join(timeout=120)
    messages, code, _ = stream.result
    assert code == 1000, messages[-1:]
    assert_same_estimates([m for m in messages if m["type"] == "estimate"], expected_estimates(predictor, wave))


def test_bad_uploads_get_a_4xx_naming_the_problem(server, good_stream, clips, predictor):
    good = wav_bytes(clips["sad"])
    nan = clips["sad"].copy()
    nan[100] = np.nan
    cases = {
        "empty": (b"", 400, "empty"),
        "not audio": (b"this is not audio at all" * 10, 415, "unreadable"),
        "truncated WAV": (good[:len(good) // 2], 415, "truncated"),
        "NaN samples": (wav_bytes(nan, subtype="FLOAT"), 422, "NaN"),
        "silent": (wav_bytes(np.zeros(SR, np.float32)), 422, "silent"),
        "too short": (wav_bytes(clips["sad"][:100]), 422, "too short"),
        "oversized": (wav_bytes(np.tile(clips["sad"], 8)), 413, "over the limit"),
    }
    for what, (data, status, reason) in cases.items():
        r = httpx.post(server + "/v1/predict", content=data, timeout=60)
        assert (r.status_code, r.json()["status"]) == (status, status), what
        assert reason in r.json()["error"], (what, r.json())
    r = httpx.post(server + "/v1/predict", files={"audio": ("sad.wav", good)}, timeout=60)
    assert r.status_code == 400 and "'file'" in r.json()["error"]
    r = httpx.post(server + "/v1/predict", content=good, headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    r = httpx.post(server + "/v1/predict", content=good, timeout=60)  # Still serving.
    assert r.status_code == 200 and r.json()["label"] == predictor.predict(clips["sad"])["label"] == "sad"


def test_bad_streams_are_closed_with_a_reason(server, good_stream, clips):
    ok = {"rate": SR, "format": "s16le"}
    one_second = s16(clips["sad"][:SR])
    cases = {
        "audio before settings": (one_second, [], 1003, "first message must be the JSON settings"),
        "settings not JSON": ("rate=16000", [], 1003, "not a JSON object"),
        "unknown format": ({"rate": SR, "format": "mp3"}, [], 1003, "format must be one of"),
        "bad rate": ({"rate": 0, "format": "s16le"}, [], 1003, "rate must be an integer"),
        "misspelt setting": ({**ok, "chanels": 2}, [], 1003, "unknown settings ['chanels']"),
        "garbage samples": ({"rate": SR, "format": "f32le"}, [np.full(4000, 1e9, "<f4").tobytes()], 1003, "garbage"),
        "s16le sent as f32le": ({"rate": SR, "format": "f32le"}, [one_second], 1003, "is it really f32le?"),
        "unknown text message": (ok, ['{"type": "pause"}'], 1003, "must be {\"type\": \"end\"}"),
        "too fast": (ok, pieces(s16(np.tile(clips["sad"], 6)), 96_000), 1008, "faster than real time"),
        "too long": (ok, pieces(s16(np.tile(clips["sad"], 3)), 96_000), 1008, "longer than the limit of 6 s"),
        "oversized message": (ok, [bytes(300_000)], 1009, ""),
    }
    for what, (settings, chunks, code, reason) in cases.items():
        messages, got_code, got_reason = talk(server, settings, chunks, end=False)
        assert got_code == code, (what, got_code, got_reason)
        assert reason in got_reason, (what, got_reason)
        if code != 1009:  # uvicorn closes an oversized message itself.
            assert messages[-1] == {"type": "error", "error": messages[-1]["error"]} and reason in messages[-1]["error"]
    t0 = time.monotonic()
    messages, code, reason = talk(server, ok, [one_second], end=False)  # Then silence on the line.
    assert (code, reason) == (1008, "no message for 3 s") and time.monotonic() - t0 >= 3
    assert [m["time"] for m in messages if m["type"] == "estimate"] == [0.5, 1.0]  # What it sent was answered.


def health(url: str) -> dict:
    return httpx.get(url + "/healthz").json()


def wait_for_streams(url: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while health(url)["streams"] != count:
        assert time.monotonic() < deadline, health(url)
        time.sleep(0.05)


def test_a_vanished_stream_is_freed(server, clips):
    wait_for_streams(server, 0)
    ws = connect(ws_url(server))
    ws.send(json.dumps({"rate": SR, "format": "s16le"}))
    ws.send(s16(clips["sad"][:SR]))
    assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    wait_for_streams(server, 1)
    ws.socket.shutdown(socket.SHUT_RDWR)  # Gone without a close frame, mid-stream.
    ws.socket.close()
    wait_for_streams(server, 0)


def test_streams_past_capacity_are_told_to_come_back_later(server, clips):
    wait_for_streams(server, 0)
    with contextlib.ExitStack() as open_streams:
        for _ in range(LIMITS["max_streams"]):
            ws = open_streams.enter_context(connect(ws_url(server)))
            ws.send(json.dumps({"rate": SR, "format": "s16le"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        messages, code, reason = talk(server, {"rate": SR, "format": "s16le"}, [])
        assert code == 1013 and "capacity: 4 streams open (limit 4)" in reason
        assert "capacity" in messages[0]["error"]
        assert httpx.post(server + "/v1/predict", content=wav_bytes(clips["sad"])).status_code == 200
    wait_for_streams(server, 0)
    messages, code, _ = talk(server, {"rate": SR, "format": "s16le"}, [s16(clips["sad"])])
    assert code == 1000 and messages[-1]["type"] == "end"


def test_sigterm_drains_open_streams_and_exits_cleanly(angry_sad_workdir, predictor, clips):
    proc, url = start_server(angry_sad_workdir, "--buckets=1")
    try:
        wave = clips["angry"][:int(1.2 * SR)]
        with connect(ws_url(url)) as ws:
            ws.send(json.dumps({"rate": SR, "format": "s16le"}))
            ws.send(s16(wave))
            messages = [json.loads(ws.recv(timeout=30)) for _ in range(3)]  # ready, 0.5 s, 1.0 s
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    messages.append(json.loads(ws.recv(timeout=30)))
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server shutting down")
        assert messages[-1] == {"type": "end", "audio_s": 1.2}
        # The last window (1.2 s) was still classified before the close.
        assert_same_estimates([m for m in messages if m["type"] == "estimate"], expected_estimates(predictor, wave))
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
        assert "Traceback" not in out, out[-3000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
