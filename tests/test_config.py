"""Configs from the command line: every key can be overridden, also those that default to None."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from ser_jax.features import FeatureConfig, mel_filterbank

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p) for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "base"))


def parse(argv: list[str]):
    """The config `python -m ser_jax.main` would get from `argv`."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def none_keys(config, prefix: str = "") -> dict[str, type]:
    """Every key that defaults to None, with the type its placeholder declares."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(none_keys(value, f"{prefix}{key}."))
        elif value is None:
            out[prefix + key] = config.get_type(key)
    return out


def test_feature_settings_that_default_to_none_can_be_set():
    config = parse(["main", f"--config={CONFIGS[0]}", "--config.features.fmax=7600", "--config.features.n_fft=512"])
    features = FeatureConfig.from_mapping(config.features)
    assert (features.fmax, features.n_fft, features.fft_size) == (7600.0, 512, 512)
    assert mel_filterbank(features).shape == (257, features.n_mels)


@pytest.mark.parametrize("config_file", CONFIGS)
def test_every_key_that_defaults_to_none_takes_an_override(config_file):
    keys = none_keys(parse(["main", f"--config={config_file}"]))
    assert "features.fmax" in keys and "data.synthetic.n_speakers" in keys
    assert keys["eval.test_time_speeds"] is tuple
    value = {k: (0.9, 1.1) if t is tuple else "a,b" if t is str else 3 for k, t in keys.items()}
    config = parse(["main", f"--config={config_file}", *(f"--config.{k}={value[k]}" for k in keys)])
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value[key], key
