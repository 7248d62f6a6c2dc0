"""Keeps XLA:CPU from handing convolutions to YNNPACK, whose kernel for their weight gradient is slow.

Since jaxlib 0.8.2, XLA:CPU can run convolutions as YNNPACK library calls, and jaxlib 0.10 does
so by default. The gradient of a conv layer's weights is itself a convolution whose window is the
whole feature map (125 x 20 frames by mel bins for the recipe's second block), and YNNPACK ran
that one at about 7 GFLOP/s on a 2-vCPU AMD EPYC: 108 ms of the recipe's 308 ms training step.
XLA's own convolutions take the step to 205 ms and the README's RAVDESS run from 14 min 59 s to
11 min 22 s (benchmarks/train_throughput.py times both). Validation and evaluation in the same
process run with them too (RAVDESS's validation speakers in batches of 32: 1.96 against 2.15 s).
Prediction and serving keep jaxlib's choice: a streaming window at batch 1 takes the same time
with either (`benchmarks/latency.py --convolutions=jaxlib,xla`).

A setting of the process, like `host_memory`: XLA reads `XLA_FLAGS` once, when its CPU client
starts, so call it before the first computation. A user's own ynn_fusion_type setting is left as it
is, and so is a jaxlib that predates the flag's value (XLA refuses flags it does not know).
"""

from __future__ import annotations

import importlib.metadata
import os
import re

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SETTING = f"{FLAG}=-individual_convolution"  # Take convolutions out of the default list, keep the rest.
FIRST_JAXLIB = (0, 8, 2)  # The first jaxlib whose flag knows individual_convolution (0.8.1's does not).


def jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's release numbers, (0, 0, 0) when there is none to read."""
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return (0, 0, 0)
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def prefer_xla_convolutions(environ: dict[str, str] | None = None, jaxlib: tuple[int, ...] | None = None) -> bool:
    """Adds `SETTING` to `XLA_FLAGS` in `environ` (default: os.environ); True if it did.

    Nothing changes when `XLA_FLAGS` already names the flag (the user's choice) or when `jaxlib`
    (default: the installed one) is older than `FIRST_JAXLIB`.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags or (jaxlib_version() if jaxlib is None else jaxlib) < FIRST_JAXLIB:
        return False
    environ["XLA_FLAGS"] = f"{flags} {SETTING}".strip()
    return True


def convolution_setting(environ: dict[str, str] | None = None) -> str:
    """Which convolutions `XLA_FLAGS` in `environ` (default: os.environ) asks for, as benchmarks record it."""
    flags = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
    return "xla" if SETTING in flags else "as XLA_FLAGS sets" if FLAG in flags else "jaxlib default"
