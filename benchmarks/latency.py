"""CPU latency of one streaming window: waveform in, probabilities out (batch 1).

    python benchmarks/latency.py [--configs configs/cnn_bilstm.py,configs/conformer.py | --workdir DIR |
                                  --models ravdess_tess_cnn_bilstm,ravdess_tess_cnn_bilstm_x3]
                                 [--window 3.0] [--iters 300] [--breakdown] [--readings recorded,one_pass]
                                 [--convolutions jaxlib,xla]

Times the jitted window function that streaming uses (`Predictor.window_function`: JAX log-Mel
frontend, normalisation and model in one compiled function), including the host->device copy of the
waveform and the copy of the probabilities back, and the same function exported with
`ser_jax.export` and reloaded through `ser_jax.serving`. Without --workdir the models are those of
the --configs files (default configs/cnn_bilstm.py: channels (16, 32), BiLSTM 48, 40 mels; 8
classes) with random weights, which time the same as trained ones; several configs are timed in one
run, alternating, so that a machine shared with other jobs loads them alike, and each is also given
as a ratio to the first; --models does the same for packaged models (an ensemble costs its members'
passes added up). Each model is read as recorded (its `inference.test_time_speeds`: one model
pass per rate) and, with `one_pass` in --readings, once per window as `--test_time_speeds none`
deploys it: what the averaging costs. Convolutions run as prediction and serving run them, as
jaxlib chooses (YNNPACK's on jaxlib 0.10); with `xla` in --convolutions, also as training runs them
(XLA's own, `ser_jax/xla_cpu.py`), to see whether that setting would pay at batch 1 too.

Each setting runs in its own subprocess, since XLA reads its flags when it starts:
  one core:  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" and the process pinned to one CPU
             (sched_setaffinity, as `taskset -c 0` would);
  all cores: no flags, no pinning.
Prints ms per window (median, p90) and the real-time factor at the hop (ms per window / hop ms: the
share of one core's time that keeping up with a stream takes), and writes
benchmarks/results/latency.json. --breakdown also times the two halves of the window function as
separate jitted functions: the log-Mel frontend (`classify.window_features`) and the model
(`classify.classify_mel`), the very functions the fused one is made of.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import child
import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "latency.json")
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false"
TARGET_MS = 10.0


def _stats(times_s: list[float]) -> dict:
    import numpy as np

    ms = np.asarray(times_s) * 1000
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "iters": int(ms.size)}


def _time(fn, iters: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _stats(times)


def _predictor(workdir: str | None, config_path: str, speeds: tuple[float, ...] | None = None,
               model: str | None = None):
    """The workdir's model, the packaged `model`, or the config's with random weights; read at `speeds`
    (None: as recorded)."""
    import numpy as np
    from flax import nnx

    from ser_jax.predictor import Predictor

    if workdir:
        return Predictor.from_workdir(workdir, test_time_speeds=speeds)
    if model:
        return Predictor.from_pretrained(model, test_time_speeds=speeds)
    from ser_jax.config_files import load_py
    from ser_jax.dataset_format import EMOTIONS
    from ser_jax.features import FeatureConfig
    from ser_jax.model_info import ModelInfo
    from ser_jax.models import create_model

    config = load_py(config_path)
    features = FeatureConfig.from_mapping(config.features)
    classes = EMOTIONS[:8]
    model = create_model(config.model, num_classes=len(classes), n_mels=features.n_mels,
                         prosody=features.prosody_columns, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    info = ModelInfo(class_names=classes, features=features, mean=np.full(features.dim, -40.0, np.float32),
                     std=np.full(features.dim, 15.0, np.float32),
                     test_time_speeds=tuple(config.inference.test_time_speeds))
    return Predictor(info, graphdef, params, stats, test_time_speeds=speeds)


def _breakdown(predictor, wave, n, iters: int) -> dict:
    """The frontend and the model as separate jitted functions (weights closed over, as in the fused
    function; inputs on device): where the time goes. They sum to a little more than the fused
    function, which also saves the copy between them."""
    import jax

    from ser_jax import classify, warping

    info = predictor.info
    params, stats = jax.device_get((predictor.params, predictor.batch_stats))
    frontend = jax.jit(functools.partial(classify.window_features, features=info.features, mean=info.mean,
                                         std=info.std))
    model = jax.jit(functools.partial(classify.classify_mel, predictor.graphdef, params, stats,
                                      speeds=info.test_time_speeds, bins=warping.MelBins.of(info.features, info.std),
                                      prior_offset=info.prior_offset()))
    mel, lengths = frontend(wave, n)
    return {"frontend": _time(lambda: jax.block_until_ready(frontend(wave, n)), iters),
            "model": _time(lambda: jax.block_until_ready(model(mel, lengths)), iters),
            "shapes": {"mel": list(mel.shape)}}


def run_child(args) -> dict:
    """Runs in the subprocess of one setting; returns its figures."""
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    from ser_jax import xla_cpu

    if args.xla_convolutions:
        xla_cpu.prefer_xla_convolutions()
    import jax
    import numpy as np

    from ser_jax import export, serving

    predictor = _predictor(args.workdir, args.configs, () if args.one_pass else None, args.models)
    window = int(round(args.window * predictor.sample_rate))
    wave = (0.1 * np.random.default_rng(0).standard_normal((1, window))).astype(np.float32)
    n = np.full(1, window, np.int32)
    fn = predictor.window_function(window)
    t0 = time.perf_counter()
    np.asarray(fn(wave, n))
    compile_s = time.perf_counter() - t0
    result = {"jit": _time(lambda: np.asarray(fn(wave, n)), args.iters), "compile_s": compile_s}
    # The exported artefact (weights baked in as constants), reloaded as a server would.
    exported = export.export_window(predictor, window, batch=1)
    served = serving.ExportedClassifier(jax.export.deserialize(exported.serialize()))
    np.asarray(served(wave, n))
    result["exported"] = _time(lambda: np.asarray(served(wave, n)), args.iters)
    np.testing.assert_allclose(served(wave, n), np.asarray(fn(wave, n)), atol=1e-5)
    if args.breakdown:
        result["breakdown"] = _breakdown(predictor, jax.device_put(wave), jax.device_put(n), args.iters)
    result.update(cpus=len(os.sched_getaffinity(0)), xla_flags=os.environ.get("XLA_FLAGS", ""),
                  convolutions=xla_cpu.convolution_setting(),
                  window_samples=window, test_time_speeds=list(predictor.info.test_time_speeds))
    return result


def _run_setting(args, path: str, *, single: bool, one_pass: bool, xla_convolutions: bool) -> dict:
    cmd = ["--child", "--window", str(args.window), "--iters", str(args.iters),
           "--models" if args.models else "--configs", path]
    if xla_convolutions:
        cmd.append("--xla_convolutions")
    if one_pass:
        cmd.append("--one_pass")
    if single:
        cmd += ["--pin", str(min(os.sched_getaffinity(0)))]
    if args.workdir:
        cmd += ["--workdir", args.workdir]
    if args.breakdown:
        cmd.append("--breakdown")
    return child.run(__file__, cmd, env={"XLA_FLAGS": SINGLE_THREAD_FLAGS if single else ""})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=None, help="time a trained workdir's model (default: random init)")
    p.add_argument("--configs", default="configs/cnn_bilstm.py",
                   help="comma-separated config files whose models (random init) are timed; not with --workdir")
    p.add_argument("--models", default=None, help="comma-separated packaged models (names or folders) to time instead")
    p.add_argument("--window", type=float, default=3.0, help="window seconds")
    p.add_argument("--hop", type=float, default=0.5, help="hop seconds, for the real-time factor")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--breakdown", action="store_true", help="also time the frontend and the model apart")
    p.add_argument("--settings", default="single,all", help="comma-separated: single, all")
    p.add_argument("--readings", default="recorded,one_pass",
                   help="comma-separated: recorded (the model's test-time speeds), one_pass (one pass per window)")
    p.add_argument("--convolutions", default="jaxlib",
                   help="comma-separated: jaxlib (its default, as prediction and serving run), xla (as training runs)")
    p.add_argument("--one_pass", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--xla_convolutions", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--output", default=RESULTS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pin", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child.reply(run_child(args))
        return 0

    settings = [s for s in args.settings.split(",") if s]
    if args.workdir and args.models:
        p.error("--workdir and --models: give one")
    if args.models:
        paths = [m for m in args.models.split(",") if m]
    else:
        paths = [args.workdir] if args.workdir else [os.path.abspath(p) for p in args.configs.split(",") if p]
    readings = [r for r in args.readings.split(",") if r]
    if not readings or set(readings) - {"recorded", "one_pass"}:
        p.error(f"--readings: expected recorded and/or one_pass, got {args.readings!r}")
    convolutions = [c for c in args.convolutions.split(",") if c]
    if not convolutions or set(convolutions) - {"jaxlib", "xla"}:
        p.error(f"--convolutions: expected jaxlib and/or xla, got {args.convolutions!r}")
    models = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        for reading in readings:
            for conv in convolutions:
                label = name + (" 1 pass" if reading == "one_pass" else "") + (" xla convs" if conv == "xla" else "")
                models[label] = (path, reading == "one_pass", conv == "xla")
    runs = {name: {} for name in models}
    for s in settings:
        for name, (path, one_pass, xla) in models.items():  # Alternating, so that other jobs load each alike.
            runs[name]["1 core" if s == "single" else "all cores"] = _run_setting(
                args, path, single=s == "single", one_pass=one_pass, xla_convolutions=xla)
    hop_ms = args.hop * 1000
    kind = "trained" if args.workdir or args.models else "random init"
    print(f"{args.window:g} s window, batch 1, {kind}; target <= {TARGET_MS:g} ms on one core; "
          f"RTF = ms per window / {hop_ms:g} ms hop; ratio = median / the first model's median")
    print(f"{'model':<36}{'setting':<12}{'cpus':>5}{'median ms':>11}{'p90 ms':>9}{'RTF':>8}{'ratio':>7}"
          f"{'exported median':>17}")
    first = runs[next(iter(runs))]
    for name, by_setting in runs.items():
        for setting, r in by_setting.items():
            j = r["jit"]
            r["rtf_at_hop"] = j["median_ms"] / hop_ms
            r["ratio_to_first"] = j["median_ms"] / first[setting]["jit"]["median_ms"]
            print(f"{name:<36}{setting:<12}{r['cpus']:>5}{j['median_ms']:>11.2f}{j['p90_ms']:>9.2f}"
                  f"{r['rtf_at_hop']:>8.3f}{r['ratio_to_first']:>7.2f}{r['exported']['median_ms']:>17.2f}")
            for part, b in r.get("breakdown", {}).items():
                if part != "shapes":
                    print(f"    {part:<32}{'':>5}{b['median_ms']:>11.2f}{b['p90_ms']:>9.2f}")
    figures = {
        "what": "ms per window: waveform (1, window) float32 in, probabilities out, host copies included",
        "window_s": args.window, "hop_s": args.hop, "target_ms_one_core": TARGET_MS,
        "models": {name: f"{path}{'' if args.workdir or args.models else ' defaults, random init'}"
                         f"{', one pass' if one_pass else ''}{', XLA convolutions' if xla else ''}"
                   for name, (path, one_pass, xla) in models.items()},
        "runs": runs,
    }
    report.save(figures, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
