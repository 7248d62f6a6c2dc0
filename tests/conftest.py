"""Test-wide setup: eight fake CPU devices (set before JAX starts) and paths to optional real data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# librosa's numba kernels compile on first use (~40 s cold); cache them where a CI runner can write,
# so only the first run of a fresh environment pays, and worker processes share the cache.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "ser_jax", "numba"))

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RAVDESS = REPO.parent / "shared" / "data" / "ravdess"


@pytest.fixture
def ravdess_dir() -> pathlib.Path:
    if not RAVDESS.is_dir():
        pytest.skip(f"real RAVDESS not present at {RAVDESS}")
    return RAVDESS
