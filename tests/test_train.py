"""Training: data parallelism equals one device, resume follows the same trajectory, multi-process agrees."""

from __future__ import annotations

import csv
import functools
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from data_prep.corpora import synthetic
from ser_jax.config_files import load_py
from ser_jax.features import FeatureConfig
from ser_jax import branches, checkpoints, compare, distillation, ensemble, evaluate, side_by_side, train, warping
from ser_jax.mesh import make_mesh
from ser_jax.model_info import ModelInfo
from ser_jax.trained_model import TrainedModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EPOCHS, STEPS_PER_EPOCH = 2, 4  # 4 train speakers x 8 emotions = 32 clips, batch 8.
FEATURES = FeatureConfig(n_mels=24, pitch=False)  # The hand-made batches below are 24 log-Mel bins wide.
MEL_BINS = warping.MelBins.of(FEATURES, np.full(24, 10.0, np.float32))
SPEEDS = (0.9, 1.0, 1.1)
TINY_ENCODERS = {"cnn_bilstm": dict(lstm_hidden=12),
                 "conformer": dict(d_model=16, num_layers=1, num_heads=2, conv_kernel=5)}


# The config file of each model; the CNN-BiLSTM's plain recipe, not the recommended one that trains teachers.
CONFIG_FILES = {"cnn_bilstm": "cnn_bilstm_plain.py", "conformer": "conformer.py"}


def tiny_config(data_dir: str, model: str = "cnn_bilstm", **train_overrides):
    """The model's config file scaled down."""
    c = load_py(os.path.join(REPO, "configs", CONFIG_FILES[model]))
    c.data.data_dir = data_dir
    c.data.max_frames = 120
    c.data.eval_bucket_frames = 60
    c.data.synthetic.update(n_speakers=6, utterances_per_emotion=1)
    c.features.n_mels = 24
    c.model.update(channels=(8,), attention_dim=8, **TINY_ENCODERS[model])
    c.optim.warmup_steps = 2
    c.train.update(batch_size=8, eval_batch_size=16, num_epochs=NUM_EPOCHS, log_every_steps=2, keep_best=1,
                   **train_overrides)
    c.inference.test_time_speeds = SPEEDS  # Validation and evaluation average over these rates.
    return c


def config_flags(config) -> list[str]:
    """The command-line overrides that turn configs/cnn_bilstm_plain.py into `config`."""
    flat = {"data.data_dir": config.data.data_dir, "data.max_frames": 120, "data.eval_bucket_frames": 60,
            "data.synthetic.n_speakers": 6, "data.synthetic.utterances_per_emotion": 1, "features.n_mels": 24,
            "model.channels": "(8,)", "model.lstm_hidden": 12, "model.attention_dim": 8, "optim.warmup_steps": 2,
            "train.batch_size": 8, "train.eval_batch_size": 16, "train.num_epochs": NUM_EPOCHS,
            "train.log_every_steps": 2, "train.keep_best": 1, "inference.test_time_speeds": "(0.9,1.0,1.1)"}
    return [f"--config.{k}={v}" for k, v in flat.items()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir) -> tuple[str, dict]:
    """One uninterrupted run on 8 devices; the other tests compare against it."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return workdir, train.train_and_evaluate(tiny_config(data_dir), workdir)


def params_of(workdir: str, step="latest") -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(TrainedModel.load(workdir, step).params)]


@pytest.mark.parametrize("model", TINY_ENCODERS)
def test_one_device_and_eight_devices_give_the_same_loss_and_gradients(model):
    config = tiny_config("", model)
    tx = train.create_optimizer(config.optim, 10)
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES, tx=tx)
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 120, size=16).astype(np.int32)
    mel = rng.normal(size=(16, 120, 24)).astype(np.float32) * (np.arange(120)[None, :, None] < lengths[:, None, None])
    batch = {"mel": mel, "lengths": lengths, "label": rng.integers(0, 5, size=16).astype(np.int32)}
    fn = functools.partial(train.loss_and_grads, graphdef=graphdef, config=config, num_classes=5,
                           mel_bins=MEL_BINS, total_steps=10)

    def run(devices):
        mesh = make_mesh(devices)
        replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        step = jax.jit(fn, in_shardings=(replicated, sharded), out_shardings=replicated)
        out = step(jax.device_put(state, replicated), jax.device_put(batch, sharded))
        return [np.asarray(x) for x in jax.tree.leaves(out)]

    assert len(jax.devices()) == 8
    one, eight = run(jax.devices()[:1]), run(jax.devices())
    assert len(one) == len(eight) > 10
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_class_balance_weighs_every_class_as_much_in_the_loss():
    frequencies = np.array([0.5, 0.25, 0.125, 0.125])
    weights = train.balanced_class_weights(frequencies)
    np.testing.assert_allclose(frequencies * weights, 0.25)  # Each class's share of the loss: equal.
    assert float(frequencies @ weights) == pytest.approx(1.0)  # The mean example weight stays 1.

    config = tiny_config("")
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES,
                                               tx=train.create_optimizer(config.optim, 10))
    rng = np.random.default_rng(0)
    batch = {"mel": rng.normal(size=(8, 120, 24)).astype(np.float32), "lengths": np.full(8, 120, np.int32),
             "label": np.array([0, 0, 0, 0, 1, 1, 2, 3], np.int32)}
    loss = jax.jit(lambda w: train.loss_and_grads(state, batch, graphdef=graphdef, config=config, num_classes=5,
                                                 mel_bins=MEL_BINS, total_steps=10, class_weights=w))
    (plain, _), plain_grads = loss(np.ones(5, np.float32))
    (only_first, _), _ = loss(np.array([2.0, 0, 0, 0, 0], np.float32))
    (the_rest, _), _ = loss(np.array([0, 2.0, 2.0, 2.0, 2.0], np.float32))
    # The same augmentation and dropout draws: the weighted losses split the plain one by class.
    assert float(only_first + the_rest) == pytest.approx(2 * float(plain), rel=1e-5)
    assert 0 < float(only_first) != pytest.approx(float(the_rest), rel=1e-2)
    (uniform, _), uniform_grads = loss(np.full(5, 3.0, np.float32))
    assert float(uniform) == pytest.approx(3 * float(plain), rel=1e-5)
    for a, b in zip(jax.tree.leaves(uniform_grads), jax.tree.leaves(plain_grads)):
        np.testing.assert_allclose(a, 3 * b, rtol=1e-4, atol=1e-6)


def test_training_learns_keeps_best_and_latest_and_logs(reference_run):
    workdir, last = reference_run
    assert last["step"] == NUM_EPOCHS * STEPS_PER_EPOCH
    assert 0.0 <= last["val/ua"] <= 1.0
    mngr = checkpoints.manager(workdir, read_only=True)
    steps = mngr.all_steps()
    best = mngr.best_step()
    assert mngr.latest_step() == NUM_EPOCHS * STEPS_PER_EPOCH
    assert set(steps) == {best, mngr.latest_step()}  # keep_best=1 plus the latest.
    for name in ("config.json", "model_info.json", "metrics.jsonl"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert ModelInfo.load(workdir).test_time_speeds == SPEEDS  # Recorded, so deployment applies them too.


class Preempted(Exception):
    pass


def test_resumed_run_follows_the_uninterrupted_trajectory(tmp_path, data_dir, reference_run, monkeypatch):
    config = tiny_config(data_dir)
    save = checkpoints.save

    def save_then_preempt(mngr, step, *args, **kwargs):
        save(mngr, step, *args, **kwargs)
        if step == STEPS_PER_EPOCH:
            raise Preempted

    monkeypatch.setattr(checkpoints, "save", save_then_preempt)
    with pytest.raises(Preempted):
        train.train_and_evaluate(config, str(tmp_path))
    assert checkpoints.manager(str(tmp_path), read_only=True).all_steps() == [STEPS_PER_EPOCH]
    monkeypatch.setattr(checkpoints, "save", save)
    last = train.train_and_evaluate(config, str(tmp_path))
    assert last["step"] == NUM_EPOCHS * STEPS_PER_EPOCH
    for a, b in zip(params_of(reference_run[0]), params_of(str(tmp_path))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path, data_dir, reference_run):
    """Two processes with 2 CPU devices each (gloo collectives) follow a one-process 8-device run.

    Both run as subprocesses compiled at XLA's default optimisation (not the suite's level 0):
    Adam moves a weight whose gradient is near zero by about the learning rate whichever way its
    sign falls, so summing in another order shifts such weights by ~1e-3 at level 0; at the default
    level the two runs agree to 1e-5, which is the check worth having. (`reference_run` has prepared
    the dataset the three processes share.)"""
    command = [sys.executable, "-m", "ser_jax.main", "--config", "configs/cnn_bilstm_plain.py",
               *config_flags(tiny_config(data_dir))]

    def start(workdir, devices: int, *args: str) -> subprocess.Popen:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        return subprocess.Popen(command + ["--workdir", str(workdir), *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    address = f"127.0.0.1:{free_port()}"
    procs = [start(tmp_path / "one", 8)] + [
        start(tmp_path / "two", 2, "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i))
        for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert f"Validation after {NUM_EPOCHS * STEPS_PER_EPOCH} steps" in outputs[1]
    assert ModelInfo.load(str(tmp_path / "two")).test_time_speeds == SPEEDS  # The command-line tuple, parsed.
    # Restored here on 8 devices: a checkpoint written by 4 devices over 2 processes.
    for a, b in zip(params_of(str(tmp_path / "one")), params_of(str(tmp_path / "two"))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_evaluation_reports_metrics_and_leaves_out_unknown_labels(tmp_path, data_dir, reference_run):
    workdir, _ = reference_run
    config = tiny_config(data_dir)
    report = evaluate.evaluate(config, workdir)  # Default: the training dataset's test split (1 speaker).
    m = report["metrics"]
    assert m["num_examples"] == 8 and report["left_out"] == {}
    assert sum(map(sum, m["confusion"])) == 8
    assert len(report["by_speaker"]) == 1 and sum(g["num_examples"] for g in report["by_gender"].values()) == 8
    out = os.path.join(workdir, "eval")
    (folder,) = os.listdir(out)
    for name in ("report.json", "confusion_matrix.png", "confusion_matrix.csv", "per_class.csv",
                 "predictions.csv", "training_curves.png"):
        assert os.path.getsize(os.path.join(out, folder, name)) > 0
    assert report["test_time_speeds"] == list(SPEEDS)  # As recorded with the model.

    # The same model read in one pass (what the averaging buys), reported beside the recorded reading.
    with config.unlocked():
        config.eval.test_time_speeds = ()
    one_pass = evaluate.evaluate(config, workdir)
    assert one_pass["test_time_speeds"] == [] and one_pass["metrics"]["num_examples"] == 8
    assert sorted(os.listdir(out)) == sorted([folder, folder.replace("_step", "_speeds1_step")])
    assert one_pass["loss"] != pytest.approx(report["loss"], rel=1e-4)
    with config.unlocked():
        config.eval.test_time_speeds = None

    # Another corpus with a label the model never saw: EMO-DB's boredom is left out and counted.
    source = tmp_path / "emodb"
    synthetic.write_corpus(str(source), "emodb", n_speakers=2, utterances_per_emotion=1)
    prepared = tmp_path / "prepared"
    subprocess.run([sys.executable, "-m", "data_prep", "--corpus=emodb", f"--source_dir={source}",
                    f"--data_dir={prepared}", "--split=all", "--n_mels=24"], cwd=REPO, check=True,
                   capture_output=True)
    with config.unlocked():
        config.eval.update(data_dir=str(prepared), corpus="emodb", split="all", output_dir=str(tmp_path / "out"))
    report = evaluate.evaluate(config, workdir)
    assert report["left_out"] == {"boredom": 2}
    assert report["metrics"]["num_examples"] == 12
    assert set(report["by_corpus"]) == {"emodb"}

    # Scoring only the classes two corpora share: the model chooses among them, the rest is left out.
    with config.unlocked():
        config.eval.classes = "angry,sad"
    report = evaluate.evaluate(config, workdir)
    assert report["left_out"] == {"boredom": 2, "neutral": 2, "happy": 2, "fearful": 2, "disgust": 2}
    assert report["metrics"]["num_examples"] == 4
    predictions = os.path.join(config.eval.output_dir, "predictions.csv")
    rows = list(csv.DictReader(open(predictions)))
    assert {r["predicted"] for r in rows} <= {"angry", "sad"}
    # The stored probabilities are over the scored classes, so what reads them (an ensemble of the
    # fold models, a pooled score) chooses among those too.
    for r in rows:
        assert all(float(p) == 0.0 for c, p in r.items() if c in report["metrics"]["class_names"]
                   and c not in ("angry", "sad"))
        assert float(r["angry"]) + float(r["sad"]) == pytest.approx(1.0, abs=1e-5)
    assert ensemble.ensemble_metrics([predictions, predictions])["ua"] == report["metrics"]["ua"]

    # A dataset prepared with other features than the model's is refused, not silently misread.
    subprocess.run([sys.executable, "-m", "data_prep", "--corpus=emodb", f"--source_dir={source}",
                    f"--data_dir={tmp_path / 'untrimmed'}", "--split=all", "--n_mels=24", "--trim_db=0"], cwd=REPO,
                   check=True,
                   capture_output=True)
    with config.unlocked():
        config.eval.update(data_dir=str(tmp_path / "untrimmed"), classes="")
    with pytest.raises(ValueError, match="other features"):
        evaluate.evaluate(config, workdir)


def test_mistyped_config_key_fails_with_its_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ser_jax.main", "--config", "configs/cnn_bilstm.py",
                             "--workdir", str(tmp_path), "--config.optim.lrr=3e-4"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert "lrr" in result.stderr
    assert not os.listdir(tmp_path)


def test_best_checkpoint_is_found_again_after_a_restart(tmp_path):
    mngr = checkpoints.manager(str(tmp_path), keep_best=1)
    for step, ua in [(1, 0.3), (2, 0.6), (3, 0.4), (4, 0.2)]:
        x = {"x": np.full(2, step, np.float32)}
        checkpoints.save(mngr, step, state=x, model=x, metrics={checkpoints.BEST_METRIC: ua})
    mngr.wait_until_finished()
    mngr.close()
    reopened = checkpoints.manager(str(tmp_path), read_only=True)
    assert reopened.all_steps() == [2, 4]  # The best by validation UA and the latest.
    assert checkpoints.resolve_step(reopened, "best") == 2
    assert checkpoints.resolve_step(reopened, "latest") == 4


def test_eval_mode_takes_the_workdirs_config_and_refuses_what_it_cannot_change(tmp_path, reference_run):
    workdir, _ = reference_run
    command = [sys.executable, "-m", "ser_jax.main", "--workdir", workdir, "--mode=eval"]
    out = tmp_path / "eval"
    ok = subprocess.run(command + [f"--config.eval.output_dir={out}"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"Report: {out}/report.json" in ok.stdout
    assert json.loads((out / "report.json").read_text())["metrics"]["num_examples"] == 8

    refused = subprocess.run(command + ["--config.model.lstm_hidden=4", "--config.features.n_mels=40"],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "Refused: --config.features.n_mels, --config.model.lstm_hidden" in refused.stderr
    # configs/cnn_bilstm.py as it is: not the model (nor the mel count) this workdir was trained with.
    other = subprocess.run(command + ["--config", "configs/cnn_bilstm.py"], cwd=REPO, capture_output=True, text=True)
    assert other.returncode != 0 and "differs from what" in other.stderr and "model, features" in other.stderr


def test_fewer_than_three_folds_or_a_missing_test_fold_are_refused_before_preparing(tmp_path):
    data_dir = tmp_path / "data"
    for folds, test_fold, message in ((2, 0, "at least 3"), (3, 3, "test_fold=3 is out of range")):
        config = tiny_config(str(data_dir))
        with config.unlocked():
            config.data.update(folds=folds, test_fold=test_fold)
        with pytest.raises(ValueError, match=message):
            train.train_and_evaluate(config, str(tmp_path / "workdir"))
        assert not data_dir.exists()  # Nothing generated or prepared.


def test_weight_average_is_what_evaluation_and_deployment_get():
    params = {"w": jax.numpy.zeros(3)}
    ones = {"w": jax.numpy.ones(3)}
    assert train.update_ema(params, ones, jax.numpy.asarray(0), 0.0) is ones  # Off: the weights themselves.
    np.testing.assert_allclose(train.update_ema(params, ones, jax.numpy.asarray(0), 0.99)["w"], 0.9)  # Ramp 1/10.
    np.testing.assert_allclose(train.update_ema(params, ones, jax.numpy.asarray(10**6), 0.99)["w"], 0.01, rtol=1e-4)

    config = tiny_config("")
    with config.unlocked():
        config.optim.ema_decay = 0.9
    tx = train.create_optimizer(config.optim, 10)
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES, tx=tx)
    steps = train.Steps(make_mesh(), graphdef, tx, config, 5, MEL_BINS, total_steps=10)
    state = steps.place_state(state)
    rng = np.random.default_rng(1)
    batch = {"mel": rng.normal(size=(8, 60, 24)).astype(np.float32), "lengths": np.full(8, 60, np.int32),
             "label": rng.integers(0, 5, 8).astype(np.int32)}
    for _ in range(3):
        state, _ = steps.train(state, steps.global_batch(batch))
    variables = train.model_variables(state)
    leaves = zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(state.params))
    assert any(not np.allclose(e, p) for e, p in leaves)
    jax.tree.map(np.testing.assert_array_equal, variables["params"], state.ema_params)


def test_transductive_speaker_normalisation_is_its_own_mode(tmp_path, data_dir, reference_run):
    from ser_jax import input_pipeline, pretrained
    from ser_jax.datasets import training_data
    from ser_jax.predictor import Predictor

    config = tiny_config(data_dir)
    with config.unlocked():
        config.data.transductive_speaker_norm = True
        config.train.num_epochs = 1
    workdir = str(tmp_path / "transductive")
    train.train_and_evaluate(config, workdir)
    (corpus,) = training_data(config, workdir)

    # Every speaker, the test speaker too, is normalised by its own frames: zero mean, unit variance.
    sources = [corpus.dataset.source(corpus.splits[role]) for role in ("train", "test")]
    stats = input_pipeline.speaker_statistics(sources)
    assert len(stats) == 5  # 4 training speakers and the test speaker.
    data = input_pipeline.load_eval_set(sources, mean=np.zeros(24), std=np.ones(24), class_names=corpus.dataset.class_names(["all"]),
                                        speaker_stats=stats)
    for speaker in set(data.metadata["speaker"]):
        frames = np.concatenate([m for m, s in zip(data.mels, data.metadata["speaker"]) if s == speaker])
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-3)

    report = evaluate.evaluate(config, workdir)
    assert report["transductive"] and not evaluate.evaluate(tiny_config(data_dir), reference_run[0])["transductive"]
    # It needs a speaker's other clips, which deployment never has: refused there, with the reason.
    with pytest.raises(ValueError, match="transductive"):
        Predictor.from_workdir(workdir)
    with pytest.raises(ValueError, match="transductive"):
        pretrained.save(TrainedModel.load(workdir), config.model, str(tmp_path / "packaged"))


def test_gradient_reversal_is_the_identity_forward_and_minus_scale_backward():
    from ser_jax import speaker_adversary as sa

    x = jax.numpy.array([1.0, -2.0, 3.0])
    scale = jax.numpy.float32(0.3)
    np.testing.assert_array_equal(sa.reverse_gradient(x, scale), x)
    g = jax.grad(lambda v: jax.numpy.sum(sa.reverse_gradient(v, scale) * jax.numpy.array([1.0, 2.0, 3.0])))(x)
    np.testing.assert_allclose(g, [-0.3, -0.6, -0.9], rtol=1e-6)
    ramp = [float(sa.reversal_scale(jax.numpy.asarray(s), 100, 0.5)) for s in (0, 25, 50, 100)]
    assert ramp[0] == 0.0 and ramp == sorted(ramp)
    assert ramp[1] == pytest.approx(0.5 * 0.848, rel=1e-2) and ramp[3] == pytest.approx(0.5, rel=1e-3)


def test_speaker_adversary_reverses_its_gradient_into_the_model_by_the_ramped_weight():
    rng = np.random.default_rng(2)
    batch = {"mel": rng.normal(size=(8, 60, 24)).astype(np.float32), "lengths": np.full(8, 60, np.int32),
             "label": rng.integers(0, 5, 8).astype(np.int32), "speaker": rng.integers(0, 3, 8).astype(np.int32)}
    with pytest.raises(ValueError, match="two training speakers"):
        train.create_train_state(tiny_config("", speaker_adversary=1.0), num_classes=5, features=FEATURES,
                                 tx=train.create_optimizer(tiny_config("").optim, 10), num_speakers=1)

    @functools.cache
    def loss_and_grads_at(weight: float):
        """The jitted loss and gradients of a fresh model trained with this adversary weight (augmentation
        off: it has no part in the reversal, and leaves one compile per weight to pay)."""
        config = tiny_config("", speaker_adversary=weight)
        config.augment.update(speed=0.0, freq_mixstyle=0.0, gain_db=0.0, tilt_db=0.0, spec_augment=False)
        tx = train.create_optimizer(config.optim, 10)
        _, plain = train.create_train_state(tiny_config(""), num_classes=5, features=FEATURES, tx=tx)
        graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES, tx=tx,
                                                   num_speakers=3 if weight else 0)
        jax.tree.map(np.testing.assert_array_equal, state.params, plain.params)  # Same model, same init.
        return state, jax.jit(functools.partial(train.loss_and_grads, graphdef=graphdef, config=config,
                                                num_classes=5, mel_bins=MEL_BINS, total_steps=10))

    def grads(weight: float, step: int):
        state, fn = loss_and_grads_at(weight)
        (_, (_, _, m)), (g, g_heads) = fn(state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)), batch)
        assert g_heads["auxiliary"] is None
        return [np.asarray(x) for x in jax.tree.leaves(g)], g_heads["adversary"], m

    off, no_adversary, m_off = grads(0.0, 5)
    assert no_adversary is None and "speaker_loss" not in m_off
    # At step 0 the ramp is at 0: the model's gradient is the emotion loss's alone.
    for a, b in zip(grads(1.0, 0)[0], off):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    one, adversary_grads, m = grads(1.0, 5)
    two, _, m2 = grads(2.0, 5)
    assert m["reversal_scale"] == pytest.approx(2 / (1 + np.exp(-5)) - 1, rel=1e-5)
    assert 0 < float(m["speaker_loss"]) and float(m["loss"]) == pytest.approx(float(m_off["loss"]), rel=1e-6)
    assert all(np.abs(np.asarray(x)).max() > 0 for x in jax.tree.leaves(adversary_grads))
    # The speaker loss reaches the model scaled by the weight: twice the weight, twice the change.
    changed = [a - b for a, b in zip(one, off)]
    assert max(np.abs(c).max() for c in changed) > 1e-4
    for c1, c2 in zip(changed, [a - b for a, b in zip(two, off)]):
        np.testing.assert_allclose(c2, 2 * c1, rtol=1e-3, atol=1e-6)


def test_auxiliary_task_adds_its_weighted_loss_on_the_clips_whose_value_is_known():
    from ser_jax import auxiliary_task

    rng = np.random.default_rng(3)
    batch = {"mel": rng.normal(size=(8, 60, 24)).astype(np.float32), "lengths": np.full(8, 60, np.int32),
             "label": rng.integers(0, 5, 8).astype(np.int32),
             "auxiliary": np.array([0, 1, 1, 0, -1, 1, -1, 0], np.int32)}

    @functools.cache
    def loss_and_grads_at(weight: float):
        config = tiny_config("", auxiliary_task="intensity" if weight else "", auxiliary_weight=weight)
        config.augment.update(speed=0.0, freq_mixstyle=0.0, gain_db=0.0, tilt_db=0.0, spec_augment=False)
        graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES,
                                                   tx=train.create_optimizer(config.optim, 10),
                                                   auxiliary_values=2 if weight else 0)
        return state, jax.jit(functools.partial(train.loss_and_grads, graphdef=graphdef, config=config,
                                                num_classes=5, mel_bins=MEL_BINS, total_steps=10))

    def grads(weight: float, ids=batch["auxiliary"]):
        state, fn = loss_and_grads_at(weight)
        (loss, (_, _, m)), (g, g_heads) = fn(state, {**batch, "auxiliary": ids})
        return float(loss), [np.asarray(x) for x in jax.tree.leaves(g)], g_heads, m, state

    loss_off, off, heads_off, m_off, _ = grads(0.0)
    assert heads_off == {"adversary": None, "auxiliary": None} and "auxiliary_loss" not in m_off
    loss_one, one, heads_one, m, state = grads(0.5)
    # The emotion loss is unchanged; the head's, weighted, is added to it.
    assert float(m["loss"]) == pytest.approx(float(m_off["loss"]), rel=1e-6)
    assert loss_one == pytest.approx(loss_off + 0.5 * float(m["auxiliary_loss"]), rel=1e-5)
    assert 0 < float(m["auxiliary_loss"])
    assert min(abs(float(m["auxiliary_accuracy"]) - k / 6) for k in range(7)) < 1e-6  # Over the 6 known clips.
    assert all(np.abs(x).max() > 0 for x in jax.tree.leaves(heads_one["auxiliary"]))
    assert max(np.abs(a - b).max() for a, b in zip(one, off)) > 1e-5  # It reaches the encoder.
    # Clips of unknown value add nothing: with none known, the gradients are the emotion loss's alone.
    loss_none, none, _, m_none, _ = grads(0.5, np.full(8, -1, np.int32))
    assert float(m_none["auxiliary_loss"]) == 0.0 and loss_none == pytest.approx(loss_off, rel=1e-6)
    for a, b in zip(none, off):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The masked mean is the mean over the known clips.
    embedding = np.asarray(jax.random.normal(jax.random.key(0), (4, state.auxiliary.params["kernel"].shape[0])))
    params = state.auxiliary.params
    logits = embedding @ np.asarray(params["kernel"]) + np.asarray(params["bias"])
    ids = np.array([1, -1, 0, 1])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_p[0, 1], log_p[2, 0], log_p[3, 1]])
    loss, accuracy = auxiliary_task.loss_and_accuracy(params, embedding, ids)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(accuracy) == pytest.approx(np.mean(logits[[0, 2, 3]].argmax(-1) == [1, 0, 1]))


def test_auxiliary_task_values_come_from_the_training_clips_and_bad_fields_are_refused():
    from ser_jax import auxiliary_task

    clips = [{"intensity": b"strong", "gender": "female"}, {"intensity": b"normal", "gender": "female"},
             {"intensity": b"", "gender": "unknown"}]
    assert auxiliary_task.field_ids([clips[:1], clips[1:]], "intensity") == {"normal": 0, "strong": 1}
    with pytest.raises(ValueError, match="'gender'.*1 known value"):
        auxiliary_task.field_ids([clips], "gender")
    with pytest.raises(ValueError, match="'loudness' is not a text field"):
        auxiliary_task.field_ids([clips], "loudness")


def test_training_only_heads_run_resume_and_deploy_the_plain_model(tmp_path, data_dir, reference_run):
    """The speaker adversary and an auxiliary task together: both learn, both live in the train
    state only, both resume."""
    import orbax.checkpoint as ocp

    config = tiny_config(data_dir, speaker_adversary=0.5, auxiliary_task="gender")
    workdir = str(tmp_path / "heads")
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "train/speaker_loss" in r]
    assert len(rows) == NUM_EPOCHS * STEPS_PER_EPOCH // 2  # Every logged step.
    scales = [r["train/reversal_scale"] for r in rows]
    assert scales == sorted(scales) and 0 < scales[0] < scales[-1] <= 0.5
    assert all(0.0 <= r["train/speaker_accuracy"] <= 1.0 for r in rows)
    assert all(r["train/auxiliary_loss"] > 0 and 0.0 <= r["train/auxiliary_accuracy"] <= 1.0 for r in rows)
    # The heads are in the train state (one logit per training speaker; female and male), not in the model item.
    mngr = checkpoints.manager(workdir, read_only=True)
    state = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert state["adversary"]["params"]["out"]["bias"].shape == (4,)  # The 4 training speakers.
    assert state["auxiliary"]["params"]["bias"].shape == (2,)
    model = TrainedModel.load(workdir)
    assert jax.tree.structure(model.params) == jax.tree.structure(TrainedModel.load(reference_run[0]).params)
    assert evaluate.evaluate(config, workdir)["metrics"]["num_examples"] == 8
    # Resuming picks the heads up with the rest of the state.
    with config.unlocked():
        config.train.num_epochs = NUM_EPOCHS + 1
    assert train.train_and_evaluate(config, workdir)["step"] == (NUM_EPOCHS + 1) * STEPS_PER_EPOCH


def test_distillation_trains_towards_the_teachers_share_of_each_target():
    config = tiny_config("")
    with config.unlocked():
        config.distill.weight = 0.5
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES,
                                               tx=train.create_optimizer(config.optim, 10))
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int32)
    other = (labels + 1) % 5
    batch = {"mel": rng.normal(size=(8, 120, 24)).astype(np.float32), "lengths": np.full(8, 120, np.int32),
             "label": labels}
    loss = jax.jit(lambda b: train.loss_and_grads(state, b, graphdef=graphdef, config=config, num_classes=5,
                                                 mel_bins=MEL_BINS, total_steps=10)[0][0])
    # The same augmentation and dropout draws throughout, and cross-entropy is linear in its target.
    on_labels, on_other = float(loss(batch)), float(loss({**batch, "label": other}))
    teacher = lambda classes: {**batch, "teacher": np.eye(5, dtype=np.float32)[classes]}  # noqa: E731
    assert float(loss(teacher(labels))) == pytest.approx(on_labels, rel=1e-5)
    assert float(loss(teacher(other))) == pytest.approx((on_labels + on_other) / 2, rel=1e-5)
    assert on_other != pytest.approx(on_labels, rel=1e-2)


def _train_losses(workdir: str) -> list[float]:
    """The training loss of every logged step of a run."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]


def _teacher_csv(path, sources, class_names, shift: int) -> str:
    """A teacher sure of each clip's label shifted by `shift` classes, for every clip of `sources`."""
    from ser_jax import dataset_format as fmt, input_pipeline

    lookup = fmt.label_lookup(class_names)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*ensemble.FIXED_COLUMNS, *class_names])
        for source in sources:
            for i in range(len(source)):
                ex = source[i]
                p = np.eye(len(class_names))[(lookup[ex["label"]] + shift) % len(class_names)]
                w.writerow([input_pipeline.clip_path(ex), "s", "female", "synthetic", "x", "x", *p])
    return str(path)


def test_online_teacher_scores_the_augmented_view_the_student_sees():
    config = tiny_config("")
    with config.unlocked():
        config.distill.update(weight=1.0, temperature=0.1)  # A sharp teacher: its answer moves with the input.
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES,
                                               tx=train.create_optimizer(config.optim, 10))
    with config.unlocked():
        config.seed = 1
    teacher_graphdef, teacher = train.create_train_state(config, num_classes=5, features=FEATURES,
                                                         tx=train.create_optimizer(config.optim, 10))
    teacher_variables = train.model_variables(teacher)
    rng = np.random.default_rng(0)
    batch = {"mel": rng.normal(size=(8, 120, 24)).astype(np.float32), "lengths": np.full(8, 120, np.int32),
             "label": np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int32)}
    clean = distillation.online_targets(teacher_graphdef, teacher_variables, batch["mel"], batch["lengths"], 0.1)
    assert float(clean.max(-1).mean()) > 0.6  # Decisive, not uniform: a wrong view would show.

    def losses(cfg):
        loss = functools.partial(train.loss_and_grads, state, graphdef=graphdef, config=cfg, num_classes=5,
                                 mel_bins=MEL_BINS, total_steps=10)
        online = loss(batch, teacher_graphdef=teacher_graphdef, teacher_variables=teacher_variables)[0][0]
        on_clean_clips = loss({**batch, "teacher": clean})[0][0]  # What fixed teacher targets would give.
        return float(online), float(on_clean_clips)

    online, on_clean_clips = losses(config)  # The recipe's augmentation: another view than the clean clip.
    assert online != pytest.approx(on_clean_clips, rel=1e-3)
    with config.unlocked():
        config.augment.update(speed=0.0, freq_mixstyle=0.0, gain_db=0.0, tilt_db=0.0, spec_augment=False)
    online, on_clean_clips = losses(config)  # No augmentation: the view is the clip, the targets the same.
    assert online == pytest.approx(on_clean_clips, rel=1e-5)


def test_online_teachers_are_read_as_one_and_must_know_the_students_data(tmp_path, reference_run):
    import shutil

    workdir = reference_run[0]
    info = ModelInfo.load(workdir)
    single = distillation.load_online_teacher(workdir, 0, "latest", info)
    pair = distillation.load_online_teacher(f"{workdir},{workdir.replace('reference', 'referen?e')}", 0,
                                            "latest", info)
    assert pair.checkpoint == f"{single.checkpoint},{single.checkpoint}"  # The glob found the same run.
    mel = np.random.default_rng(0).normal(size=(4, 100, info.features.dim)).astype(np.float32)
    lengths = np.array([100, 80, 60, 40], np.int32)
    np.testing.assert_allclose(distillation.online_targets(pair.graphdef, pair.variables, mel, lengths, 2.0),
                               distillation.online_targets(single.graphdef, single.variables, mel, lengths, 2.0),
                               rtol=1e-5, atol=1e-6)
    other = str(tmp_path / "other_data")  # The same model, as if trained on data of another loudness.
    shutil.copytree(workdir, other)
    with open(os.path.join(other, "model_info.json")) as f:
        data = json.load(f)
    data["mean"] = [m + 1.0 for m in data["mean"]]
    with open(os.path.join(other, "model_info.json"), "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=r"other_data/checkpoints/\d+ differs from the student in its "
                                         r"normalisation statistics"):
        distillation.load_online_teacher(f"{workdir},{other}", 0, "latest", info)
    with pytest.raises(FileNotFoundError, match=r"distill.teacher_models: no training workdir matches .*fold3"):
        distillation.load_online_teacher(str(tmp_path / "fold{test_fold}"), 3, "latest", info)


def test_online_distillation_run_learns_from_the_teacher(tmp_path, data_dir, reference_run):
    config = tiny_config(data_dir)
    with config.unlocked():
        config.distill.update(weight=1.0, teachers=str(tmp_path / "teacher.csv"), teacher_models=reference_run[0])
    with pytest.raises(ValueError, match="set one"):
        train.train_and_evaluate(config, str(tmp_path / "both"))
    with config.unlocked():
        config.distill.teachers = ""
    workdir = str(tmp_path / "online")
    train.train_and_evaluate(config, workdir)

    # The reference run's initialisation, batches and draws: only the targets can move the first loss.
    reference, distilled = _train_losses(reference_run[0]), _train_losses(workdir)
    assert len(distilled) == len(reference) and distilled[0] != pytest.approx(reference[0], rel=1e-3)
    assert TrainedModel.load(workdir).step == NUM_EPOCHS * STEPS_PER_EPOCH


def test_online_teachers_are_weighted_and_a_teacher_of_weight_zero_is_not_read(tmp_path, data_dir, reference_run):
    config = tiny_config(data_dir)
    with config.unlocked():
        config.seed = 1
    other = str(tmp_path / "seed1")
    train.train_and_evaluate(config, other)  # A second teacher of the same data, another model.
    first, info = reference_run[0], ModelInfo.load(reference_run[0])
    mel = np.random.default_rng(0).normal(size=(4, 100, info.features.dim)).astype(np.float32)
    lengths = np.array([100, 80, 60, 40], np.int32)

    def probabilities(weights: str) -> np.ndarray:
        teacher = distillation.load_online_teacher(f"{first},{other}", 0, "latest", info, weights)
        return np.asarray(distillation.online_targets(teacher.graphdef, teacher.variables, mel, lengths, 1.0))

    alone = [probabilities(w) for w in ("1,0", "0,2")]
    assert not np.allclose(*alone, atol=1e-3)
    np.testing.assert_allclose(probabilities("1,3"), 0.25 * alone[0] + 0.75 * alone[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities(""), (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-6)
    only_second = distillation.load_online_teacher(f"{first},{other}", 0, "latest", info, "0,1")
    assert only_second.checkpoint == TrainedModel.load(other).checkpoint  # The first is not even loaded.
    for bad in ("1", "1,-1", "0,0"):
        with pytest.raises(ValueError, match=r"distill.teacher_weights=.* must give each of the 2 online teachers"):
            distillation.load_online_teacher(f"{first},{other}", 0, "latest", info, bad)


def test_a_warm_started_student_starts_from_its_first_teachers_weights(tmp_path, data_dir, reference_run):
    config = tiny_config(data_dir)
    with config.unlocked():
        config.distill.warm_start_keep = 0.5
    with pytest.raises(ValueError, match=r"distill.warm_start_keep=0.5 shapes the warm start: it needs "
                                         r"distill.warm_start=True"):
        train.train_and_evaluate(config, str(tmp_path / "no_warm_start"))
    with config.unlocked():
        config.distill.update(warm_start=True, warm_start_keep=1.0, teacher_weights="1,1")
    with pytest.raises(ValueError, match=r"distill.teacher_weights='1,1' weights online teachers"):
        train.train_and_evaluate(config, str(tmp_path / "no_teacher_to_weigh"))
    with config.unlocked():
        config.distill.teacher_weights = ""
    with pytest.raises(ValueError, match="distill.warm_start starts the student from its first online teacher"):
        train.train_and_evaluate(config, str(tmp_path / "no_teacher"))
    with config.unlocked():
        config.distill.teacher_models = f"{reference_run[0]},{reference_run[0]}"
        config.optim.lr = 0.0  # Nothing moves the weights: they stay where the run started.
    workdir = str(tmp_path / "warm")
    train.train_and_evaluate(config, workdir)
    for started, teacher in zip(params_of(workdir), params_of(reference_run[0]), strict=True):
        np.testing.assert_allclose(started, teacher, rtol=1e-6, atol=1e-7)
    with config.unlocked():
        config.distill.warm_start = False
    cold = str(tmp_path / "cold")
    train.train_and_evaluate(config, cold)  # The same run from its random initialisation.
    assert not all(np.allclose(a, b) for a, b in zip(params_of(cold), params_of(reference_run[0])))
    with config.unlocked():
        config.distill.update(warm_start=True, warm_start_keep=0.0)
    with pytest.raises(ValueError, match=r"distill.warm_start_keep must be in \(0, 1\], got 0.0"):
        train.train_and_evaluate(config, str(tmp_path / "nothing_kept"))
    with config.unlocked():
        config.distill.warm_start_keep = 0.25
    shrunk = str(tmp_path / "shrunk")
    train.train_and_evaluate(config, shrunk)  # A quarter of the teacher, the rest the cold run's start.
    for started, teacher, initial in zip(params_of(shrunk), params_of(reference_run[0]), params_of(cold), strict=True):
        np.testing.assert_allclose(started, 0.25 * teacher + 0.75 * initial, rtol=1e-5, atol=1e-6)
    with config.unlocked():
        config.distill.warm_start_keep = 1.0
        config.model.update(lstm_hidden=8, attention_dim=4)
    with pytest.raises(ValueError, match=r"the first teacher, .*reference.*, is another model than the student "
                                         r"\(model.attention_dim, model.lstm_hidden differ\)"):
        train.train_and_evaluate(config, str(tmp_path / "other_model"))


TINY_TEACHER = """from configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model.update(channels=(8,), lstm_hidden={lstm_hidden}, attention_heads=2, attention_dim=8)
    c.optim.warmup_steps = 2
    c.train.update(batch_size=8, eval_batch_size=16, num_epochs=2, log_every_steps=2, keep_best=1)
    c.distill.teacher_models = {teacher_models!r}
    return c
"""


def _teacher_file(path, lstm_hidden: int = 12, teacher_models: str = "") -> str:
    path.write_text(TINY_TEACHER.format(lstm_hidden=lstm_hidden, teacher_models=teacher_models))
    return str(path)


def _run_record(workdir: str) -> tuple:
    """What training leaves behind: its checkpoint steps and its logged metrics."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return sorted(os.listdir(os.path.join(workdir, "checkpoints"))), f.read()


def test_a_run_trains_its_teachers_first_then_learns_from_them(tmp_path, reference_run):
    # No data_dir: the corpus is prepared in <workdir>/data, once, before the teachers start side by side.
    config = tiny_config("")
    bilstm, cnn = _teacher_file(tmp_path / "tiny_bilstm.py"), _teacher_file(tmp_path / "tiny_cnn.py", lstm_hidden=0)
    with config.unlocked():
        config.distill.teacher_configs = f"{bilstm},{cnn}"
    workdir = str(tmp_path / "student")
    train.train_and_evaluate(config, workdir)
    prepared = os.path.join(workdir, "data")

    teachers = [os.path.join(workdir, "teachers", name) for name in ("tiny_bilstm_seed0", "tiny_cnn_seed1")]
    last = 2 * STEPS_PER_EPOCH
    for teacher, seed, lstm_hidden in zip(teachers, (0, 1), (12, 0)):
        saved = json.load(open(os.path.join(teacher, "config.json")))
        assert (saved["seed"], saved["model"]["lstm_hidden"], saved["train"]["num_epochs"]) == (seed, lstm_hidden, 2)
        # The student's data and features, whatever the teacher's file says.
        assert saved["data"] == {**config.data.to_dict(), "data_dir": prepared}
        assert saved["features"] == config.features.to_dict()
        assert TrainedModel.load(teacher).step == last
        # Read at its last checkpoint, a teacher validates once, at the end; the unvalidated epoch's
        # checkpoint went when the next came.
        with open(os.path.join(teacher, "metrics.jsonl")) as f:
            assert [r["step"] for r in map(json.loads, f) if "val/ua" in r] == [last]
        assert os.listdir(os.path.join(teacher, "checkpoints")) == [str(last)]
        # Trained side by side in a process of its own, which logged there.
        assert side_by_side.log_tail(os.path.join(teacher, "train.log"), 1)[0].startswith(
            f"Validation after {last} steps")
    # The same teacher trained here, in this process, is the same model to the last bit.
    first, _ = train.teacher_runs(config, workdir)[0]
    train.train_and_evaluate(first, str(tmp_path / "in_process"))
    assert _train_losses(str(tmp_path / "in_process")) == _train_losses(teachers[0])
    here, there = (TrainedModel.load(w, "latest").variables for w in (str(tmp_path / "in_process"), teachers[0]))
    jax.tree.map(np.testing.assert_array_equal, here, there)
    student = json.load(open(os.path.join(workdir, "config.json")))["distill"]
    assert (student["teacher_models"], student["teacher_configs"]) == (",".join(teachers), "")
    # The reference run's initialisation, batches and draws: only the teachers' targets move the first loss.
    reference, distilled = _train_losses(reference_run[0]), _train_losses(workdir)
    assert len(distilled) == len(reference) and distilled[0] != pytest.approx(reference[0], rel=1e-3)
    assert TrainedModel.load(workdir).step == NUM_EPOCHS * STEPS_PER_EPOCH

    before = [_run_record(w) for w in (*teachers, workdir)]
    train.train_and_evaluate(config, workdir)  # Run again: every part is finished, nothing trains twice.
    assert [_run_record(w) for w in (*teachers, workdir)] == before


def test_teachers_that_cannot_be_trained_here_are_refused_before_anything_trains(tmp_path, data_dir):
    config = tiny_config(data_dir)
    plain = _teacher_file(tmp_path / "plain.py")
    cases = {f"{plain},{tmp_path / 'missing.py'}": (FileNotFoundError, r"no config file .*missing\.py"),
             _teacher_file(tmp_path / "student.py", teacher_models="runs/t"): (ValueError, "teachers of its own")}
    for teacher_configs, (error, message) in cases.items():
        with config.unlocked():
            config.distill.teacher_configs = teacher_configs
        with pytest.raises(error, match=message):
            train.train_and_evaluate(config, str(tmp_path / "run"))
    with config.unlocked():
        config.distill.update(teacher_configs=plain, teacher_models="runs/t")
    with pytest.raises(ValueError, match="set one"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    with config.unlocked():
        config.distill.update(teacher_configs=plain, teacher_models="")
        config.train.eval_every_epochs = 0
    with pytest.raises(ValueError, match="train.eval_every_epochs counts epochs"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_the_recommended_config_trains_the_plain_recipe_and_the_cnn_only_model_as_its_teachers(tmp_path,
                                                                                             monkeypatch):
    config = load_py(os.path.join(REPO, "configs", "cnn_bilstm.py"))
    monkeypatch.chdir(tmp_path)  # The teachers' config files are found from anywhere.
    with config.unlocked():
        config.seed = 2
        config.data.update(corpus="ravdess", folds=6, test_fold=3, refit=True)
        compare._override(config, "distill.teacher_workdir=cv/teachers/fold{test_fold}")  # A path, taken as text.
    runs = train.teacher_runs(config, "cv/student")
    assert [w for _, w in runs] == ["cv/teachers/fold3/cnn_bilstm_plain_seed2", "cv/teachers/fold3/cnn_only_seed3"]
    (bilstm, _), (cnn, _) = runs
    assert (bilstm.model.lstm_hidden, cnn.model.lstm_hidden) == (48, 0)
    # The teachers learn from labels alone; the student starts from the CNN-BiLSTM teacher, the same model.
    assert (bilstm.train.num_epochs, cnn.train.num_epochs, config.train.num_epochs) == (60, 60, 60)
    assert config.distill.warm_start and bilstm.model.to_dict() == config.model.to_dict()
    # It learns from the CNN-only teacher alone: the CNN-BiLSTM teacher is trained for the start, then not read.
    assert distillation.teacher_shares(config.distill.teacher_weights, [w for _, w in runs]) == [0, 1]
    # Read at their last checkpoints, the teachers validate at the end alone; the student every 4 epochs.
    assert (bilstm.train.eval_every_epochs, cnn.train.eval_every_epochs, config.train.eval_every_epochs) == (60, 60, 4)
    assert config.distill.teacher_processes == 2
    assert not (bilstm.distill.teacher_configs or cnn.distill.teacher_configs)
    assert bilstm.data.data_dir == "cv/student/data"  # Where the student prepares its corpus when data_dir is empty.
    assert {k: v for k, v in cnn.data.items() if k != "data_dir"} == {
        k: v for k, v in config.data.items() if k != "data_dir"}


def test_training_examples_held_in_memory_give_the_same_batches_as_read_from_disk(data_dir, reference_run):
    from ser_jax import input_pipeline
    from ser_jax.datasets import normalization, train_sources, training_data

    corpora = training_data(tiny_config(data_dir), reference_run[0])
    (corpus,) = corpora
    size = corpus.dataset.mel_bytes(corpus.splits["train"])
    held = train_sources(corpora, cache_mb=size / 2**20)
    assert isinstance(held[0], list)  # Just fits: decoded into memory.
    assert sum(ex["mel"].nbytes for ex in held[0]) == size  # The size it was judged by is the real one.
    for too_small in (0, 0.99 * size / 2**20):
        (on_disk,) = train_sources(corpora, cache_mb=too_small)
        assert not isinstance(on_disk, list) and len(on_disk) == len(held[0])
    names = list(corpus.dataset.class_names(corpus.splits["train"]))
    mean, std = normalization(corpora)
    kw = dict(mean=mean, std=std, class_names=names, max_frames=120, global_batch=8, seed=3)
    pairs = zip(input_pipeline.train_dataset([on_disk], **kw), input_pipeline.train_dataset(held, **kw), range(6))
    for a, b, _ in pairs:  # Six batches: one epoch and the reshuffled start of the next.
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_batches_carry_each_clips_teacher_probabilities(tmp_path, data_dir, reference_run):
    from ser_jax import distillation, input_pipeline
    from ser_jax.datasets import normalization, training_data

    (corpus,) = training_data(tiny_config(data_dir), reference_run[0])
    sources = [corpus.dataset.source(corpus.splits["train"])]
    names = list(corpus.dataset.class_names(corpus.splits["train"]))
    csv_file = _teacher_csv(tmp_path / "teacher.csv", sources, names, shift=1)
    targets = distillation.teacher_targets([[csv_file]], names, temperature=1.0,
                                           clips=input_pipeline.clip_paths(sources))
    mean, std = normalization([corpus])
    batches = input_pipeline.train_dataset(sources, mean=mean, std=std, class_names=names,
                                           max_frames=120, global_batch=8, seed=0, teacher_targets=targets)
    for batch, _ in zip(batches, range(4)):  # One epoch: every training clip once.
        assert batch["teacher"].shape == (8, len(names))
        np.testing.assert_array_equal(batch["teacher"].argmax(-1), (batch["label"] + 1) % len(names))


def test_distillation_run_learns_from_the_teachers_and_refuses_clips_they_did_not_score(tmp_path, data_dir,
                                                                                      reference_run):
    from ser_jax.datasets import training_data

    (corpus,) = training_data(tiny_config(data_dir), reference_run[0])
    names = list(corpus.dataset.class_names(corpus.splits["train"]))
    train_sources = [corpus.dataset.source(corpus.splits["train"])]
    config = tiny_config(data_dir)
    with config.unlocked():
        config.distill.update(weight=1.0, temperature=1.0,
                              teachers=_teacher_csv(tmp_path / "val.csv", [corpus.dataset.source(
                                  corpus.splits["validation"])], names, shift=0))
    with pytest.raises(ValueError, match=r"teacher .*val\.csv has no prediction for 32 training clips"):
        train.train_and_evaluate(config, str(tmp_path / "uncovered"))

    with config.unlocked():
        config.distill.teachers = _teacher_csv(tmp_path / "shifted.csv", train_sources, names, shift=1)
    workdir = str(tmp_path / "distilled")
    train.train_and_evaluate(config, workdir)

    # Same initialisation, batches and draws as the reference run (a rerun follows it exactly, as the
    # resume test shows): only the targets, the teacher's wrong classes, can move the first loss.
    reference, distilled = _train_losses(reference_run[0]), _train_losses(workdir)
    assert len(distilled) == len(reference) and distilled[0] != pytest.approx(reference[0], rel=1e-3)


def test_sharpness_aware_steps_take_the_gradient_at_the_perturbed_weights():
    rng = np.random.default_rng(5)
    batch = {"mel": rng.normal(size=(8, 60, 24)).astype(np.float32), "lengths": np.full(8, 60, np.int32),
             "label": rng.integers(0, 5, 8).astype(np.int32)}
    config = tiny_config("")
    config.optim.sam_rho = 0.05
    # No conv blocks: the gradient of ReLU-then-max-pool at ties depends on how XLA fuses the program.
    config.model.channels = ()
    tx = train.create_optimizer(config.optim, 10)
    graphdef, state = train.create_train_state(config, num_classes=5, features=FEATURES, tx=tx)
    kwargs = dict(graphdef=graphdef, config=config, num_classes=5, mel_bins=MEL_BINS, total_steps=10)
    plain_step, sam_step = (jax.jit(functools.partial(train.train_step, tx=tx, sharpness_aware=on, **kwargs))
                            for on in (False, True))

    def params(state):
        return [np.asarray(x) for x in jax.tree.leaves(state.params)]

    # After two plain steps, so that Adam's moments weigh the gradient's size, not only its sign.
    state = plain_step(plain_step(state, batch)[0], batch)[0]
    sam, m = sam_step(state, batch)
    grad_fn = jax.jit(functools.partial(train.loss_and_grads, **kwargs))
    (_, (_, stats, _)), (g, _) = grad_fn(state, batch)
    moved = train.sharpness_aware_params(state.params, g, 0.05)
    distance = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2)
                           for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(state.params))))
    assert distance == pytest.approx(0.05, rel=1e-4)  # 0.05 up the gradient.
    (_, (_, _, _)), (g_sam, _) = grad_fn(state.replace(params=moved), batch)
    updates, _ = tx.update(g_sam, state.opt_state, state.params)
    for a, b in zip(params(sam), jax.tree.leaves(optax.apply_updates(state.params, updates))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    plain, _ = plain_step(state, batch)
    assert max(np.abs(a - b).max() for a, b in zip(params(sam), params(plain))) > 1e-3
    jax.tree.map(np.testing.assert_array_equal, sam.batch_stats, stats)  # The first pass's statistics.
    assert float(m["grad_norm"]) > 0

    for rho, start in ((-0.1, 0.5), (0.05, 1.0)):
        config.optim.update(sam_rho=rho, sam_start=start)
        with pytest.raises(ValueError, match="optim.sam_rho must be >= 0"):
            train.sam_start_step(config.optim, 10)


def test_sharpness_aware_training_starts_part_way(tmp_path, data_dir, reference_run, monkeypatch, capsys):
    config = tiny_config(data_dir)
    config.optim.update(sam_rho=0.05, sam_start=0.5)
    taken = []
    step = train.Steps.train

    def recording_step(self, state, batch, sharpness_aware=False):
        taken.append(sharpness_aware)
        return step(self, state, batch, sharpness_aware)

    monkeypatch.setattr(train.Steps, "train", recording_step)
    total = NUM_EPOCHS * STEPS_PER_EPOCH
    assert train.train_and_evaluate(config, str(tmp_path))["step"] == total
    assert taken == [False] * (total // 2) + [True] * (total // 2)
    assert f"from step {total // 2} of {total}" in capsys.readouterr().out
    assert max(np.abs(a - b).max() for a, b in zip(params_of(str(tmp_path)), params_of(reference_run[0]))) > 1e-4


def test_branches_copy_average_and_merge_a_state():
    config = tiny_config("")
    tx = train.create_optimizer(config.optim, 10)
    _, state = train.create_train_state(config, num_classes=5, features=FEATURES, tx=tx)
    copies = branches.branch(state, 3)
    assert branches.is_branched(copies) and not branches.is_branched(state)
    assert copies.step.shape == (3,) and len({tuple(np.asarray(r)) for r in copies.rng}) == 3  # Own noise each.
    for a, b in zip(jax.tree.leaves(copies.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.broadcast_to(np.asarray(b), a.shape))
    # Move the copies apart, then merge: every copy becomes the mean, and keeps its key.
    apart = copies.replace(params=jax.tree.map(lambda x: x + np.arange(3.0).reshape(3, *[1] * (x.ndim - 1)),
                                               copies.params))
    merged = branches.merge(apart)
    for m, p in zip(jax.tree.leaves(merged.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(m), np.broadcast_to(np.asarray(p) + 1.0, m.shape), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(merged.rng), np.asarray(copies.rng))
    assert int(branches.average(merged).step) == 0

    for k, start, merge in ((0, 0.5, 0), (2, 1.0, 0), (2, 0.5, -1)):
        config.train.update(branches=k, branch_start=start, branch_merge_epochs=merge)
        with pytest.raises(ValueError, match="train.branches must be >= 1"):
            branches.start_step(config.train, 10)


def test_branched_training_shares_the_trunk_resumes_and_deploys_the_average(tmp_path, data_dir, reference_run,
                                                                            monkeypatch, capsys):
    config = tiny_config(data_dir, branches=2, branch_start=0.5, checkpoint_every_steps=2)
    total = NUM_EPOCHS * STEPS_PER_EPOCH
    taken, last = [], {}
    step = train.Steps.train

    def recording_step(self, state, batch, sharpness_aware=False):
        taken.append(branches.is_branched(state))
        out = step(self, state, batch, sharpness_aware)
        last["state"] = jax.device_get(out[0])
        return out

    monkeypatch.setattr(train.Steps, "train", recording_step)
    whole = str(tmp_path / "whole")
    assert train.train_and_evaluate(config, whole)["step"] == total
    assert taken == [False] * (total // 2) + [True] * (total // 2)
    assert f"2 branches from step {total // 2} of {total}" in capsys.readouterr().out
    final = last["state"]
    # The trunk is the plain run's; the copies then part, and the model is their averaged weights.
    assert _train_losses(whole)[:2] == pytest.approx(_train_losses(reference_run[0])[:2], rel=1e-6)
    ema = [np.asarray(x) for x in jax.tree.leaves(final.ema_params)]
    assert min(np.abs(x[0] - x[1]).max() for x in ema if x[0].size > 8) > 1e-5
    for a, b in zip(params_of(whole), ema):
        np.testing.assert_allclose(a, b.mean(0), rtol=1e-5, atol=1e-7)

    # Preempted after a branched step's checkpoint, the run resumes onto the two copies and ends as the
    # uninterrupted one.
    save = checkpoints.save

    def save_then_preempt(mngr, step, *args, **kwargs):
        save(mngr, step, *args, **kwargs)
        if step == total - 2:
            raise Preempted

    monkeypatch.setattr(checkpoints, "save", save_then_preempt)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(Preempted):
        train.train_and_evaluate(config, resumed)
    monkeypatch.setattr(checkpoints, "save", save)
    train.train_and_evaluate(config, resumed)
    for a, b in zip(params_of(whole), params_of(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # Averaged every epoch: the branched epoch's last step ends in a merge, which leaves the copies equal.
    config.train.branch_merge_epochs = 1
    merges = []
    monkeypatch.setattr(train.Steps, "__init__", _recording_merges(train.Steps.__init__, merges))
    merged = str(tmp_path / "merged")
    train.train_and_evaluate(config, merged)
    assert len(merges) == 1
    ema = [np.asarray(x) for x in jax.tree.leaves(merges[0].ema_params)]
    for x, model in zip(ema, params_of(merged)):
        np.testing.assert_array_equal(x[0], x[1])
        np.testing.assert_allclose(model, x[0], rtol=1e-6)


def _recording_merges(init, merges: list):
    """`Steps.__init__` whose jitted merge also keeps a host copy of every merged state in `merges`."""
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        merge = self.merge

        def recording_merge(state):
            out = merge(state)
            merges.append(jax.device_get(out))
            return out
        self.merge = recording_merge
    return recording_init
