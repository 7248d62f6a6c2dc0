"""Serialises the window classifier (waveform -> probabilities, weights baked in) with `jax.export`.

    python -m ser_jax.export --workdir DIR [--checkpoint best] [--window 3.0] [--batch 0|1|N] [--platforms cpu,cuda]
    python -m ser_jax.export --model NAME ...     # a packaged model: ./NAME/export/ unless --output

writes `<workdir>/export/ser_window.bin` (a serialised `jax.export.Exported`: StableHLO with the
weights as constants) and `ser_window.json` beside it (class names, sample rate, window samples,
the signature). The exported function is

    f(waveform: float32[batch, window_samples], num_samples: int32[batch]) -> float32[batch, classes]

with the log-Mel frontend, the training normalisation and the model inside; `num_samples` is the
count of valid samples per row (a window at the start of a stream is zero-padded), normally
`window_samples`. `--batch 0` (the default) exports a symbolic batch dimension, so one file serves
any batch size; `--batch N` fixes it. `ser_jax.serving.load_exported` loads it with only jax and
numpy (no Flax, no training code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ser_jax.classify import window_classifier
from ser_jax.predictor import Predictor, add_reading_arguments, reading
from ser_jax.serving import FORMAT_VERSION, metadata_path

EXPORT_DIR = "export"
EXPORT_FILE = "ser_window.bin"


def export_window(predictor: Predictor, window_samples: int, *, batch: int = 0,
                  platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """The predictor's window function with its weights closed over (constants), exported.

    `batch=0` gives a symbolic batch dimension "b"; `platforms` defaults to the current backend.
    """
    fn = window_classifier(predictor.info, predictor.graphdef, predictor.params, predictor.batch_stats)
    b = jax.export.symbolic_shape("b")[0] if batch == 0 else batch
    args = (jax.ShapeDtypeStruct((b, window_samples), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32))
    return jax.export.export(jax.jit(fn), platforms=tuple(platforms) if platforms else None)(*args)


def metadata(predictor: Predictor, exported: jax.export.Exported, window_samples: int, batch: int,
             workdir: str | None = None, model: str | None = None) -> dict:
    """What a deployment needs to call the exported function, and where its weights came from (a
    training `workdir` or a packaged `model`)."""
    info = predictor.info
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(info.class_names),
        "sample_rate": info.features.sample_rate,
        "window_samples": window_samples,
        "window_seconds": window_samples / info.features.sample_rate,
        "batch": batch or "b",
        "inputs": [{"name": "waveform", "shape": [batch or "b", window_samples], "dtype": "float32"},
                   {"name": "num_samples", "shape": [batch or "b"], "dtype": "int32"}],
        "outputs": [{"name": "probabilities", "shape": [batch or "b", len(info.class_names)], "dtype": "float32"}],
        "platforms": list(exported.platforms),
        "features": {k: getattr(info.features, k) for k in info.features.__dataclass_fields__},
        "test_time_speeds": list(info.test_time_speeds),  # Baked into the function: its cost per window.
        "prior_correction": info.prior_correction,  # Baked in too: probabilities as if classes were equally common.
        "workdir": os.path.abspath(workdir) if workdir else None,
        "model": model,
        "step": predictor.step,
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
    }


def save(exported: jax.export.Exported, meta: dict, path: str) -> tuple[str, str]:
    """Writes the serialised function to `path` and its metadata to `<path without .bin>.json`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(exported.serialize())
    os.replace(path + ".tmp", path)
    meta_path = metadata_path(path)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return path, meta_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ser_jax.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training workdir")
    source.add_argument("--model", help="a model packaged with ser_jax (`python -m ser_jax.pretrained` lists them)")
    p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number")
    p.add_argument("--window", type=float, default=3.0, help="window length in seconds")
    p.add_argument("--batch", type=int, default=0, help="0: symbolic batch dimension; N: fixed batch of N")
    p.add_argument("--platforms", default="", help="comma-separated, e.g. cpu,cuda (default: this machine's backend)")
    add_reading_arguments(p)
    p.add_argument("--output", default="", help=f"output file (default <workdir or ./NAME>/{EXPORT_DIR}/{EXPORT_FILE})")
    args = p.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.ERROR)
    if args.model:
        predictor = Predictor.from_pretrained(args.model, **reading(args))
    else:
        predictor = Predictor.from_workdir(args.workdir, args.checkpoint, **reading(args))
    source = args.workdir or os.path.basename(os.path.normpath(args.model))
    window = int(round(args.window * predictor.sample_rate))
    platforms = [s.strip() for s in args.platforms.split(",") if s.strip()] or None
    exported = export_window(predictor, window, batch=args.batch, platforms=platforms)
    out = args.output or os.path.join(source, EXPORT_DIR, EXPORT_FILE)
    path, meta_path = save(exported, metadata(predictor, exported, window, args.batch, args.workdir, args.model), out)
    size = os.path.getsize(path) / 2**20
    print(f"Exported step {predictor.step} of {source}: {path} ({size:.1f} MiB, platforms "
          f"{','.join(exported.platforms)}, batch {args.batch or 'symbolic'}, {window} samples at "
          f"{predictor.sample_rate} Hz) and {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
