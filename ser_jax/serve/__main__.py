"""`python -m ser_jax.serve`: see `ser_jax.serve` (the package docstring) and the README's Serving section."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from ser_jax.predictor import Predictor, add_reading_arguments, reading
from ser_jax.serve import batcher
from ser_jax.serve.limits import Limits
from ser_jax.serve.server import serve
from ser_jax.serve.service import Service


def load_predictor(args: argparse.Namespace) -> tuple[Predictor, str]:
    """The model to serve and where it came from; the one place a new model source plugs in."""
    if args.model:
        return (Predictor.from_pretrained(args.model, **reading(args)),
                f"packaged model {args.model}")
    return (Predictor.from_workdir(args.workdir, args.checkpoint, **reading(args)),
            f"{args.workdir} ({args.checkpoint} checkpoint)")


def _buckets(text: str) -> tuple[int, ...]:
    try:
        buckets = tuple(int(b) for b in text.split(","))
    except ValueError:
        buckets = ()
    if not buckets or min(buckets) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive batch sizes, got {text!r}")
    return buckets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ser_jax.serve", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training workdir (model_info.json, config.json, checkpoints/)")
    source.add_argument("--model", help="a model packaged with ser_jax (`python -m ser_jax.pretrained` lists them)")
    p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--window", type=float, default=3.0, help="streaming window, seconds")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between a stream's estimates")
    add_reading_arguments(p)
    g = p.add_argument_group("micro-batching")
    g.add_argument("--buckets", type=_buckets, default=batcher.BUCKETS,
                   help="batch sizes compiled for the window model; a batch is padded to the next one")
    g.add_argument("--max_wait_ms", type=float, default=batcher.MAX_WAIT_S * 1000,
                   help="how long a window may wait for others to join its batch")
    g.add_argument("--model_threads", type=int, default=batcher.WORKERS, help="model calls that may run at once")
    g = p.add_argument_group("limits")
    for field in dataclasses.fields(Limits):
        g.add_argument(f"--{field.name}", type=type(field.default), default=field.default, help=field.metadata["help"])
    p.add_argument("--access_log", action="store_true", help="log every request")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # Orbax logs every restore.
    predictor, source = load_predictor(args)
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    service = Service.create(predictor, source, window_s=args.window, hop_s=args.hop, buckets=args.buckets,
                             max_wait_s=args.max_wait_ms / 1000, workers=args.model_threads, limits=limits)
    serve(service, host=args.host, port=args.port, access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
