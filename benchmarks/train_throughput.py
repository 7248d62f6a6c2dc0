"""Training throughput: samples/s and compile time of one jitted train step, on 1 and 8 CPU devices,
with the host memory and convolution settings training uses (ser_jax/host_memory.py, ser_jax/xla_cpu.py)
and, for 1 device, glibc's default and jaxlib's default convolutions (YNNPACK's) beside them.

    python benchmarks/train_throughput.py [--model=peer [--torch_python=/path/to/venv/bin/python]]

Each device count runs in its own process (XLA reads the fake-device flag at start-up). With
--torch_python, the PyTorch peer (../shared/bench/torch_peer.py) runs right after in the same session,
so the ratio is taken under the same machine load. --model=recipe (the default) times the recipe's model
and training step as configs/cnn_bilstm_plain.py trains it; with --config=configs/cnn_bilstm.py, the
recommended student's step: the same model's, plus the forward passes of the teachers it reads on each
augmented batch (built from the config's distill.teacher_configs and teacher_weights, with random weights:
the cost is the same).
--model=peer times the same code configured as the peer (its widths, no self-attention, pitch,
augmentation or weight average), so the ratio compares equal work. Figures go to
benchmarks/results/train_throughput[_peer].json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import child
import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PEER = os.path.join(REPO, "..", "shared", "bench", "torch_peer.py")
# torch_peer.py's model and step in this project's config: conv 32-64, BiLSTM 128, attention pooling of
# 64, log-Mel only, and none of the recipe's extras, which the peer does not compute.
PEER_SETTINGS = {"model": dict(channels=(32, 64), lstm_hidden=128, attention_heads=0, attention_dim=64, dropout=0.0),
                 "features": dict(pitch=False),
                 "augment": dict(speed=0.0, freq_mixstyle=0.0, gain_db=0.0, tilt_db=0.0, spec_augment=False),
                 "optim": dict(ema_decay=0.0)}


def measure(batch: int, frames: int, mels: int, steps: int, config_path: str, model: str,
            retain_memory: bool, xla_convolutions: bool) -> dict:
    """Runs in the child process: compile once, then time `steps` steps on every visible device."""
    from ser_jax import host_memory, xla_cpu

    retained = host_memory.retain_freed_memory() if retain_memory else False
    if xla_convolutions:
        xla_cpu.prefer_xla_convolutions()
    convolutions = xla_cpu.convolution_setting()
    import jax
    import numpy as np

    from flax import nnx

    from ser_jax import config_files, distillation, mesh, train, warping
    from ser_jax.features import FeatureConfig
    from ser_jax.models import create_model
    from ser_jax.trained_model import TrainedModel

    config = config_files.load_py(config_path)
    if model == "peer":
        with config.unlocked():
            for section, values in PEER_SETTINGS.items():
                config[section].update(values)
    features = FeatureConfig(n_mels=mels, pitch=config.features.pitch)
    tx = train.create_optimizer(config.optim, 1000)
    graphdef, state = train.create_train_state(config, num_classes=8, features=features, tx=tx)
    paths = train.teacher_config_paths(config.distill.teacher_configs)
    shares = distillation.teacher_shares(config.distill.teacher_weights, paths) if paths else []
    # The online teachers as training reads them: one of weight 0 is not read, one left is read alone,
    # several as their (weighted) ensemble.
    teacher_configs, weights = distillation.read_teachers([config_files.load_py(p).model.to_dict() for p in paths],
                                                          shares)
    teacher = None
    if teacher_configs:
        spec = (teacher_configs[0] if len(teacher_configs) == 1 else
                {"name": "ensemble", "members": teacher_configs, "weights": weights})
        reader = create_model(spec, num_classes=8, n_mels=features.n_mels, prosody=features.prosody_columns,
                              rngs=nnx.Rngs(1))
        teacher = TrainedModel(None, *nnx.split(reader, nnx.Param, nnx.BatchStat), step=0, checkpoint="random")
    steps_fn = train.Steps(mesh.make_mesh(), graphdef, tx, config, num_classes=8,
                           mel_bins=warping.MelBins.of(features, np.ones(features.dim, np.float32)), total_steps=1000,
                           teacher=teacher)
    state = steps_fn.place_state(state)
    rng = np.random.default_rng(0)
    batch_np = {"mel": rng.normal(size=(batch, frames, features.dim)).astype(np.float32),
                "lengths": np.full(batch, frames, np.int32), "label": rng.integers(0, 8, batch).astype(np.int32)}
    data = steps_fn.global_batch(batch_np)

    t = time.perf_counter()
    state, m = steps_fn.train(state, data)  # The first step compiles.
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    state, m = steps_fn.train(state, data)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = steps_fn.train(state, data)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return {"model": model, "config": os.path.relpath(config_path, REPO), "teachers": len(teacher_configs),
            "parameters": sum(x.size for x in jax.tree.leaves(state.params)),
            "devices": jax.device_count(), "host_memory": "retained" if retained else "default",
            "convolutions": convolutions, "batch": batch,
            "frames": frames, "mels": mels, "compile_s": round(compile_s, 2), "step_ms_median": round(1e3 * median, 1),
            "samples_per_s": round(batch / median, 1)}


def run_child(devices: int, args, retain_memory: bool = True, xla_convolutions: bool = True) -> dict:
    return child.run(__file__, ["--child", "--batch", str(args.batch), "--frames", str(args.frames), "--mels",
                                str(args.mels), "--steps", str(args.steps), "--config", args.config,
                                "--model", args.model,
                                "--retain_memory" if retain_memory else "--no-retain_memory",
                                "--xla_convolutions" if xla_convolutions else "--no-xla_convolutions"],
                     env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})


def run_torch(args) -> dict:
    out = subprocess.run([args.torch_python, TORCH_PEER, "--batch", str(args.batch), "--frames", str(args.frames),
                          "--mels", str(args.mels), "--steps", str(args.steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--mels", type=int, default=80)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--devices", default="1,8", help="Fake CPU device counts to measure.")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "cnn_bilstm_plain.py"))
    p.add_argument("--model", choices=("recipe", "peer"), default="recipe",
                   help="recipe: the model and step configs/cnn_bilstm_plain.py trains; peer: configured as "
                        "torch_peer.py.")
    p.add_argument("--torch_python", default="", help="A python with torch, to run the PyTorch peer beside.")
    p.add_argument("--out", default="", help="Default: benchmarks/results/train_throughput[_peer].json.")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--retain_memory", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    p.add_argument("--xla_convolutions", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_python and args.model != "peer":
        p.error("--torch_python needs --model=peer: the peer's model is nearly 5 times the recipe's, so only the peer "
                "configuration gives a ratio of equal work")
    if args.child:
        child.reply(measure(args.batch, args.frames, args.mels, args.steps, args.config, args.model,
                            args.retain_memory, args.xla_convolutions))
        return
    suffix = "_peer" if args.model == "peer" else ""
    out = args.out or os.path.join(REPO, "benchmarks", "results", f"train_throughput{suffix}.json")
    devices = [int(d) for d in args.devices.split(",")]
    results = {"jax": [run_child(d, args) for d in devices] + [run_child(devices[0], args, retain_memory=False),
                                                                 run_child(devices[0], args, xla_convolutions=False)]}
    for r in results["jax"]:
        n = r["teachers"]
        teachers = f", the forward passes of the {n} teacher{'s' if n > 1 else ''} it reads too" if n else ""
        print(f"JAX   {r['model']} model of {r['config']} ({r['parameters']:,} parameters{teachers}), "
              f"{r['devices']} device(s), "
              f"{r['host_memory']} host memory, {r['convolutions']} convolutions: {r['samples_per_s']:7.1f} samples/s "
              f"({r['step_ms_median']:.0f} ms/step at batch {r['batch']}x{r['frames']}x{r['mels']}), "
              f"compile and first step {r['compile_s']:.1f} s")
    if args.torch_python:
        results["torch"] = run_torch(args)
        print(f"torch CPU peer: {results['torch']}")
        torch_rate = results["torch"]["samples_per_s"]
        results["ratio_jax_1_device_over_torch"] = round(results["jax"][0]["samples_per_s"] / torch_rate, 2)
        print(f"JAX (1 device) / PyTorch: {results['ratio_jax_1_device_over_torch']}x")
    report.save(results, out)


if __name__ == "__main__":
    main()
