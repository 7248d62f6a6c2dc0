import numpy as np
import pytest
import soundfile as sf

from ser_jax.audio import AudioError, load_audio


def _tone(sr, seconds=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([y, 0.5 * y], axis=1) if channels == 2 else y


@pytest.mark.parametrize("sr,channels,subtype,ext", [(16000, 1, "PCM_16", "wav"), (48000, 2, "PCM_24", "wav"),
                                                     (22050, 1, "FLOAT", "wav"), (44100, 2, "PCM_16", "flac"),
                                                     (8000, 1, "PCM_U8", "wav")])
def test_any_rate_depth_and_channels_become_mono_16k(tmp_path, sr, channels, subtype, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(sr, channels=channels), sr, subtype=subtype)
    y = load_audio(str(path), 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 8000) <= 2
    expected_peak = 0.3 * (0.75 if channels == 2 else 1.0)  # Channels are averaged.
    assert np.max(np.abs(y[1000:-1000])) == pytest.approx(expected_peak, rel=0.03)


def _write_good(tmp_path, name="good.wav"):
    path = tmp_path / name
    sf.write(path, _tone(16000), 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"not audio at all" * 50), "unreadable"),
    (lambda p: sf.write(p, np.zeros(16000), 16000), "silent"),
    (lambda p: sf.write(p, np.zeros((0,)), 16000), "no audio samples"),
])
def test_bad_files_raise_with_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=reason) as e:
        load_audio(str(path), 16000)
    assert e.value.path == str(path)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_truncated_files_are_detected(tmp_path, ext):
    good = _write_good(tmp_path, f"good.{ext}")
    data = good.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|unreadable"):
        load_audio(str(cut), 16000)
    assert load_audio(str(good), 16000).size == 8000

