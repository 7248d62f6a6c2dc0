"""Clips per second for preparing a corpus: audio files in, TFDS ArrayRecord dataset out.

    python benchmarks/data_prep_throughput.py [--source_dir ../shared/data/ravdess] [--workers 1,2]
                                              [--repeats 3] [--synthetic_speakers 24]

Each run is a fresh `python` process that calls `data_prep.builder.prepare` into an empty data_dir,
exactly what `python -m data_prep` does, so the figure includes interpreter start, imports, the
spawn pool, decoding, resampling, log-Mel, statistics and TFDS writing. "end to end" is that
process's wall time; "prepare" is the `prepare()` call alone. Corpora: RAVDESS from --source_dir
(skipped when absent) and the synthetic corpus, generated once beforehand (its generation time is
reported separately, as a user preparing it with --source_dir empty would also pay it).

A last process, pinned to one core with the workers' settings, times the per-clip stages (decode +
resample, log-Mel in float64 NumPy) on up to --stage_clips clips, and librosa's melspectrogram +
power_to_db on the same clips as a reference for both speed and values (max |difference| in dB).
Prints a table and writes benchmarks/results/data_prep_throughput.json. Target: >= 200 clips/s
end to end on 2 cores for 3-4 s clips. Needs the test extra (librosa).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import child
import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "data_prep_throughput.json")
DEFAULT_RAVDESS = os.path.join(os.path.dirname(REPO), "shared", "data", "ravdess")
TARGET_CLIPS_PER_S = 200.0


def child_prepare(corpus: str, source_dir: str, data_dir: str, workers: int) -> dict:
    """One preparation, in its own process (started by `run_prepare`)."""
    from data_prep import builder

    t0 = time.perf_counter()
    result = builder.prepare(builder.Settings(corpus=corpus), data_dir, source_dir, workers=workers)
    seconds = time.perf_counter() - t0
    if result.reused:
        raise RuntimeError(f"{data_dir} already held a dataset; the benchmark needs an empty one")
    clips = sum(sum(c.values()) for c in result.counts.values())
    return {"prepare_s": seconds, "clips": clips, "skipped": len(result.problems)}


def child_stages(corpus: str, source_dir: str, n: int) -> dict:
    """Per-clip stage times on one core, with the settings the pool's workers use."""
    import librosa
    import numpy as np

    from data_prep.corpora import base
    from data_prep.featurize import init_feature_worker
    from ser_jax.audio import load_audio
    from ser_jax.features import FeatureConfig, log_mel

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    init_feature_worker()
    cfg = FeatureConfig()
    utterances = base.get_corpus(corpus).scan(source_dir).utterances
    paths = [u.path for u in utterances[:: max(1, len(utterances) // n)][:n]]
    load_audio(paths[0], cfg.sample_rate)  # Warm the decoders and the filterbank cache.
    log_mel(np.zeros(cfg.sample_rate), cfg)

    t0 = time.perf_counter()
    waves = [load_audio(p, cfg.sample_rate).astype(np.float64) for p in paths]
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [log_mel(w, cfg) for w in waves]
    log_mel_s = time.perf_counter() - t0

    def reference(w):
        mel = librosa.feature.melspectrogram(
            y=w, sr=cfg.sample_rate, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window="hann", center=True, pad_mode="constant", power=2.0, n_mels=cfg.n_mels, htk=False, norm="slaney")
        return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None).T

    reference(waves[0])
    t0 = time.perf_counter()
    theirs = [reference(w) for w in waves]
    librosa_s = time.perf_counter() - t0
    max_db = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    clips = len(paths)
    return {"clips": clips, "mean_clip_s": float(np.mean([w.size for w in waves]) / cfg.sample_rate),
            "decode_ms": 1000 * decode_s / clips, "log_mel_ms": 1000 * log_mel_s / clips,
            "librosa_ms": 1000 * librosa_s / clips, "max_abs_db_vs_librosa": max_db}


def run_prepare(corpus: str, source_dir: str, workers: int, scratch: str) -> dict:
    data_dir = tempfile.mkdtemp(dir=scratch, prefix=f"{corpus}_w{workers}_")
    t0 = time.perf_counter()
    result = child.run(__file__, ["--child", "prepare", "--corpus", corpus, "--source_dir", source_dir,
                     "--data_dir", data_dir, "--workers", str(workers)])
    result["end_to_end_s"] = time.perf_counter() - t0
    shutil.rmtree(data_dir)
    return result


def generate_synthetic(out_dir: str, n_speakers: int) -> dict:
    from data_prep.corpora import synthetic

    t0 = time.perf_counter()
    paths = synthetic.write_corpus(out_dir, "ravdess", n_speakers=n_speakers, utterances_per_emotion=4)
    return {"files": len(paths), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source_dir", default=DEFAULT_RAVDESS, help="RAVDESS folder (skipped when absent)")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default: 1 and all cores)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")
    p.add_argument("--synthetic_speakers", type=int, default=24, help="synthetic corpus: speakers x 8 emotions x 4")
    p.add_argument("--stage_clips", type=int, default=200)
    p.add_argument("--output", default=RESULTS)
    p.add_argument("--child", choices=["prepare", "stages"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--data_dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    if args.child == "prepare":
        child.reply(child_prepare(args.corpus, args.source_dir, args.data_dir, int(args.workers)))
        return 0
    if args.child == "stages":
        child.reply(child_stages(args.corpus, args.source_dir, args.stage_clips))
        return 0

    workers = sorted({int(w) for w in args.workers.split(",")}) if args.workers else sorted({1, cores})
    scratch = tempfile.mkdtemp(prefix="data_prep_bench_")
    try:
        corpora = {}
        if os.path.isdir(args.source_dir):
            corpora["ravdess"] = {"source_dir": os.path.abspath(args.source_dir)}
        else:
            print(f"{args.source_dir} not found: RAVDESS skipped")
        synthetic_dir = os.path.join(scratch, "synthetic_source")
        corpora["synthetic"] = {"source_dir": synthetic_dir,
                                "generation": generate_synthetic(synthetic_dir, args.synthetic_speakers)}
        for corpus, c in corpora.items():
            c["runs"] = {}
            for w in workers:
                runs = [run_prepare(corpus, c["source_dir"], w, scratch) for _ in range(args.repeats)]
                e2e = statistics.median(r["end_to_end_s"] for r in runs)
                prep = statistics.median(r["prepare_s"] for r in runs)
                clips = runs[0]["clips"]
                c["runs"][f"{w} workers"] = {
                    "workers": w, "clips": clips, "skipped": runs[0]["skipped"], "end_to_end_s": e2e,
                    "prepare_s": prep, "clips_per_s_end_to_end": clips / e2e, "clips_per_s_prepare": clips / prep,
                    "all_end_to_end_s": [r["end_to_end_s"] for r in runs]}
            c["stages_one_core"] = child.run(__file__, ["--child", "stages", "--corpus", corpus, "--source_dir", c["source_dir"],
                                           "--stage_clips", str(args.stage_clips)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"data_prep throughput, {cores} cores available; target >= {TARGET_CLIPS_PER_S:g} clips/s end to end "
          f"on 2 cores for 3-4 s clips; median of {args.repeats} runs")
    print(f"{'corpus':<11}{'workers':>8}{'clips':>7}{'mean clip s':>12}{'end-to-end s':>13}{'clips/s':>9}"
          f"{'prepare() s':>12}{'clips/s':>9}")
    for corpus, c in corpora.items():
        mean_clip = c["stages_one_core"]["mean_clip_s"]
        for r in c["runs"].values():
            print(f"{corpus:<11}{r['workers']:>8}{r['clips']:>7}{mean_clip:>12.2f}{r['end_to_end_s']:>13.2f}"
                  f"{r['clips_per_s_end_to_end']:>9.0f}{r['prepare_s']:>12.2f}{r['clips_per_s_prepare']:>9.0f}")
    print("per clip on one core (ms): decode+resample, log-Mel (NumPy float64), librosa reference; max |dB| vs librosa")
    for corpus, c in corpora.items():
        s = c["stages_one_core"]
        print(f"{corpus:<11}{s['decode_ms']:>8.2f}{s['log_mel_ms']:>8.2f}{s['librosa_ms']:>8.2f}"
              f"{s['max_abs_db_vs_librosa']:>12.2e}")
    if "generation" in corpora["synthetic"]:
        g = corpora["synthetic"]["generation"]
        print(f"synthetic corpus generation: {g['files']} files in {g['seconds']:.1f} s (one process)")
    for c in corpora.values():
        c.pop("source_dir")
    figures = {
        "what": "clips/s preparing a corpus into a TFDS ArrayRecord dataset; end to end = a fresh process's wall time",
        "target_clips_per_s": TARGET_CLIPS_PER_S, "repeats": args.repeats, "corpora": corpora,
    }
    report.save(figures, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
