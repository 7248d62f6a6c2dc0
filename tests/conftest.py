"""Test-wide setup: eight fake CPU devices (set before JAX starts) and paths to optional real data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RAVDESS = REPO.parent / "shared" / "data" / "ravdess"


@pytest.fixture
def ravdess_dir() -> pathlib.Path:
    if not RAVDESS.is_dir():
        pytest.skip(f"real RAVDESS not present at {RAVDESS}")
    return RAVDESS
