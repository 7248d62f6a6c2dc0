"""Test-wide setup: eight fake CPU devices (set before JAX starts) and paths to optional real data."""

import os
import pathlib

# Tests run tiny shapes, so compiling is most of their time: the same XLA programs with LLVM's
# optimisation level 0 compile in about half of it (the suite: 20 min in one process, 13 with it).
# Idempotent: pytest-xdist's workers inherit the flags their controller set here.
_flags = os.environ.get("XLA_FLAGS", "").split()
os.environ["XLA_FLAGS"] = " ".join(_flags + [f for f in ("--xla_force_host_platform_device_count=8",
                                                         "--xla_backend_optimization_level=0") if f not in _flags])
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


@pytest.fixture(scope="session")
def angry_sad_workdir(tmp_path_factory) -> str:
    """A tiny model trained on a synthetic corpus of two clearly different emotions (angry vs sad; 6
    speakers: 4 train, 1 validation, 1 test), so label checks are reliable; ~20 s, once per session
    for every test module that needs a trained model. It takes the recipe's prosody columns
    (`features.pitch`), so every deployment path is checked with them; the shipped models check the
    log-Mel-only path."""
    from configs.base import get_base_config
    from data_prep.corpora import synthetic
    from ser_jax import train

    root = tmp_path_factory.mktemp("angry_sad")
    source = str(root / "corpus")
    synthetic.write_corpus(source, "ravdess", n_speakers=6, utterances_per_emotion=3, emotions=("angry", "sad"))
    c = get_base_config()
    c.data.data_dir, c.data.source_dir = str(root / "data"), source
    c.data.max_frames, c.data.worker_threads = 150, 1
    c.model.channels, c.model.lstm_hidden, c.model.attention_dim, c.model.dropout = (8,), 16, 8, 0.0
    # The label checks need two emotions told apart after 24 steps, which a tiny model does more
    # reliably with dataset normalisation (the angry clips are louder) than per utterance.
    c.model.input_norm = "dataset"
    c.train.batch_size, c.train.eval_batch_size, c.train.num_epochs = 8, 8, 8
    c.train.log_every_steps, c.train.keep_best = 1000, 1
    c.optim.warmup_steps, c.optim.lr, c.optim.ema_decay = 2, 3e-3, 0.0  # 24 steps: too few to average.
    c.augment.spec_augment = False
    # Freq-MixStyle gives clips other clips' per-bin levels, and level is what tells these two synthetic
    # emotions apart: 24 steps are too few to learn them through it.
    c.augment.freq_mixstyle = 0.0
    # Clips read as they are; test_predict's test of test-time speeds makes its own copy with them.
    c.inference.test_time_speeds = ()
    workdir = str(root / "workdir")
    train.train_and_evaluate(c, workdir)
    return workdir
