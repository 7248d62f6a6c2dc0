"""Load on the emotion server: N simulated real-time clients on loopback, with and without micro-batching.

    python benchmarks/serve_load.py [--workdir DIR] [--streams 30,40,50,60,70,80,100] [--seconds 20] [--one_pass]

Settings (each a server in its own process: `ser_jax.serve` with the default model and random
weights unless --workdir, which cost the same; read at the model's test-time speeds, one model pass
per rate, or with --one_pass once per window, as `--test_time_speeds none` serves it):
  batched            the server's defaults: windows gathered into calls of up to 8 (buckets 1, 2, 4,
                     8), 2 ms wait bound, one model call at a time
  batched_2_threads  the same, with up to two model calls at once
  unbatched          one window per call
For each client count N the clients stream for --seconds: every 0.5 s hop each sends that hop's
audio (s16le, 16 kHz) and times its estimate; they start spread over one hop, as independent
callers would. Reported per step: p50/p99 hop latency (from sending the audio that completes a hop
to receiving its estimate, after a 2 s warm-up), the windows/s the server classified, its mean batch,
the serving overhead (CPU time of the server's event-loop thread: sockets, decoding, framing,
queueing, JSON; over the rest of its CPU time: the model calls), and the CPU the server and the
clients used. N is "held in real time" when every estimate came back and p99 < 250 ms; a setting
stops ramping once p99 passes 2 s. Also measured, in a process of its own first: the window model
alone at each batch size, the rate the server's throughput is compared with.

The clients run in this process, on the same machine: their CPU is taken from the server. Loopback
traffic only; every loop is bounded by --streams and --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

import child
import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "serve_load.json")
SR, HOP_S, WINDOW_S = 16000, 0.5, 3.0
WARMUP_S = 2.0
REALTIME_P99_MS = 250.0
SATURATED_P99_MS = 2000.0
SETTINGS = {"batched": ["--buckets", "1,2,4,8", "--max_wait_ms", "2", "--model_threads", "1"],
            "batched_2_threads": ["--buckets", "1,2,4,8", "--max_wait_ms", "2", "--model_threads", "2"],
            "unbatched": ["--buckets", "1", "--max_wait_ms", "0", "--model_threads", "1"]}


def _predictor(args):
    from latency import _predictor as latency_predictor  # The same default model latency.py times.

    return latency_predictor(args.workdir, os.path.join(REPO, "configs", "cnn_bilstm.py"),
                             () if args.one_pass else None)


def serve_child(args) -> None:
    """In the server's process: the model, a Service with these batching flags, uvicorn until SIGTERM."""
    from ser_jax.serve.limits import Limits
    from ser_jax.serve.server import serve
    from ser_jax.serve.service import Service

    predictor = _predictor(args)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    limits = Limits(max_streams=10_000, max_pending_windows=100_000)  # Measure the model, not admission control.
    service = Service.create(predictor, args.workdir or "random init", window_s=WINDOW_S, hop_s=HOP_S,
                             buckets=buckets, max_wait_s=args.max_wait_ms / 1000, workers=args.model_threads,
                             limits=limits)
    serve(service, port=args.port)


def model_alone_child(args) -> dict:
    """The jitted window function alone, as the server calls it: windows/s at each batch size."""
    predictor = _predictor(args)
    window = int(WINDOW_S * SR)
    fn = predictor.window_function(window)
    rates = {}
    for batch in (1, 2, 4, 8, 16):
        x = (0.1 * np.random.default_rng(0).standard_normal((batch, window))).astype(np.float32)
        n = np.full(batch, window, np.int32)
        np.asarray(fn(x, n))
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.model_seconds:
            np.asarray(fn(x, n))
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - t0)
    return {"windows_per_s": rates, "test_time_speeds": list(predictor.info.test_time_speeds)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(flags: list[str], workdir: str | None, one_pass: bool) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, os.path.abspath(__file__), "--serve_child", "--port", str(port), *flags]
    if workdir:
        cmd += ["--workdir", workdir]
    if one_pass:
        cmd.append("--one_pass")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        if proc.poll() is not None:
            raise SystemExit(f"server failed to start:\n{proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 180 s")


async def _client(url: str, start: float, hops: int, chunk: bytes, latencies: list, failures: list) -> None:
    from websockets.asyncio.client import connect

    sent: dict[int, float] = {}
    try:
        async with connect(url.replace("http://", "ws://") + "/v1/stream", max_queue=None, compression=None) as ws:
            await ws.send(json.dumps({"rate": SR, "format": "s16le", "channels": 1}))
            json.loads(await ws.recv())  # ready

            async def receive():
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "end":
                        return
                    if message["type"] != "estimate":
                        raise RuntimeError(message)
                    hop = round(message["time"] / HOP_S) - 1
                    if message["time"] >= WARMUP_S:
                        latencies.append(time.perf_counter() - sent[hop])

            receiver = asyncio.create_task(receive())
            for hop in range(hops):
                await asyncio.sleep(max(0.0, start + (hop + 1) * HOP_S - time.perf_counter()))
                sent[hop] = time.perf_counter()
                await ws.send(chunk)
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(receiver, timeout=60)
    except Exception as e:  # Refused, closed, or too slow: the count was not held.
        failures.append(f"{type(e).__name__}: {e}")


async def _load(url: str, streams: int, seconds: float) -> dict:
    """One step: `streams` clients for `seconds`; the server's counters are read over the steady part
    (from the end of the warm-up to the last hop), the latencies over every hop after the warm-up."""
    import httpx

    hops = int(seconds / HOP_S)
    rng = np.random.default_rng(0)
    chunk = (0.1 * rng.standard_normal(int(HOP_S * SR)) * 32768).astype("<i2").tobytes()
    latencies: list[float] = []
    failures: list[str] = []
    t0 = time.perf_counter() + 1.0  # Time to connect every client.
    async with httpx.AsyncClient() as http:

        async def stats_at(when: float) -> dict:
            await asyncio.sleep(max(0.0, when - time.perf_counter()))
            return {**(await http.get(url + "/v1/stats")).json(), "client_cpu_s": time.process_time()}

        clients = [_client(url, t0 + HOP_S * i / streams, hops, chunk, latencies, failures) for i in range(streams)]
        before, after, *_ = await asyncio.gather(stats_at(t0 + WARMUP_S), stats_at(t0 + hops * HOP_S), *clients)
    ms = np.asarray(latencies) * 1000
    expected = streams * (hops - int(WARMUP_S / HOP_S) + 1)
    elapsed = after["uptime_s"] - before["uptime_s"]
    server_cpu = after["process_cpu_s"] - before["process_cpu_s"]
    loop_cpu = after["event_loop_cpu_s"] - before["event_loop_cpu_s"]
    calls = after["calls"] - before["calls"]
    windows = after["windows"] - before["windows"]
    p99 = float(np.percentile(ms, 99)) if ms.size else float("inf")
    return {"streams": streams, "seconds": seconds, "estimates": int(ms.size), "estimates_expected": expected,
            "failures": len(failures), "failure_examples": failures[:3],
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None, "p99_ms": p99,
            "max_ms": float(ms.max()) if ms.size else None,
            "offered_windows_per_s": streams / HOP_S, "windows_per_s": windows / elapsed,
            "mean_batch": windows / calls if calls else 0.0,
            "model_busy_fraction": (after["model_s"] - before["model_s"]) / elapsed,
            "overhead_fraction": loop_cpu / (server_cpu - loop_cpu) if server_cpu > loop_cpu else None,
            "server_cpu_cores": server_cpu / elapsed,
            "client_cpu_cores": (after["client_cpu_s"] - before["client_cpu_s"]) / elapsed,
            "held_in_real_time": not failures and ms.size >= expected and p99 < REALTIME_P99_MS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=None, help="serve a trained workdir's model (default: random init)")
    p.add_argument("--streams", default="25,50,75,100,125,150", help="client counts to try, ascending")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each count streams")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ", ".join(SETTINGS))
    p.add_argument("--model_seconds", type=float, default=3.0, help="timing per batch size of the model alone")
    p.add_argument("--one_pass", action="store_true", help="serve each window in one model pass, not one per "
                                                           "test-time speed")
    p.add_argument("--output", default=RESULTS)
    p.add_argument("--serve_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--buckets", default="1", help=argparse.SUPPRESS)
    p.add_argument("--max_wait_ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--model_threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_child:
        serve_child(args)
        return 0
    if args.model_child:
        child.reply(model_alone_child(args))
        return 0

    counts = [int(n) for n in args.streams.split(",")]
    if max(counts) > 1000 or args.seconds > 120:
        raise SystemExit("at most 1000 streams and 120 s per step")
    model_cmd = ["--model_child", "--model_seconds", str(args.model_seconds)]
    alone = child.run(__file__, model_cmd + (["--workdir", args.workdir] if args.workdir else [])
                      + (["--one_pass"] if args.one_pass else []))
    best_alone = max(alone["windows_per_s"].values())
    print("model alone, windows/s by batch size: "
          + ", ".join(f"{b}: {r:.0f}" for b, r in alone["windows_per_s"].items()))
    runs = {}
    for name in args.settings.split(","):
        proc, url = _start_server(SETTINGS[name], args.workdir, args.one_pass)
        steps = []
        try:
            for n in counts:
                step = asyncio.run(_load(url, n, args.seconds))
                steps.append(step)
                print(f"{name:<18} {n:>4} streams: p50 {step['p50_ms'] or 0:7.1f} ms  p99 {step['p99_ms']:8.1f} ms  "
                      f"{step['windows_per_s']:6.1f} windows/s  batch {step['mean_batch']:5.2f}  "
                      f"overhead {step['overhead_fraction'] or 0:.3f}  CPU server {step['server_cpu_cores']:.2f} "
                      f"clients {step['client_cpu_cores']:.2f}  failures {step['failures']}  "
                      f"{'held' if step['held_in_real_time'] else 'NOT held'}", flush=True)
                if step["p99_ms"] > SATURATED_P99_MS or step["failures"]:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        held = [s["streams"] for s in steps if s["held_in_real_time"]]
        peak = max(s["windows_per_s"] for s in steps)
        runs[name] = {"flags": SETTINGS[name], "steps": steps, "most_streams_held": max(held, default=0),
                      "peak_windows_per_s": peak, "peak_vs_model_alone": peak / best_alone}
        print(f"{name}: most streams held in real time {max(held, default=0)}; peak {peak:.0f} windows/s "
              f"= {peak / best_alone:.2f} of the model alone ({best_alone:.0f})")
    report.save({"what": "real-time streams on loopback, 0.5 s hop, 3 s window; latency = audio sent -> estimate",
                 "model": args.workdir or "configs/cnn_bilstm.py defaults, random init", "seconds": args.seconds,
                 "test_time_speeds": alone["test_time_speeds"],
                 "model_alone": alone, "runs": runs}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
