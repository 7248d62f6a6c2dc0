"""A deterministic, speech-like emotional corpus, so tests and the demo need no downloaded data.

Each utterance is a source-filter "sentence": a glottal pulse train through formant resonators for
the vowels, band-passed noise for the fricatives, pauses between words, and room noise. Emotion sets
the prosody (pitch level, range and contour, rate, loudness, spectral tilt, jitter, shimmer,
breathiness, tremor) relative to each speaker's own voice (base pitch, vocal-tract length, rate,
expressiveness), and every utterance varies at random around that, so the classes overlap the way
real ones do: learnable from log-Mel features, but not trivially. All randomness comes from numpy
Generators seeded by (seed, speaker, emotion, utterance): the same arguments give the same samples.

On disk the corpus uses the RAVDESS layout (`--corpus=synthetic`), but `write_corpus` writes any
supported corpus' layout, so every reader can be tested on audio it parses back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
from scipy import signal

from data_prep.corpora import base, crema_d, emodb, ravdess, savee, tess

NAME = "synthetic"
MIN_SECONDS, MAX_SECONDS = 1.5, 3.0
STATEMENTS = 2  # Phonetic content cycles through two "sentences", like RAVDESS' statements.
# The corpus' default size (the demo's: 8 training speakers x 8 emotions x 5 = 320 clips), which
# `python -m data_prep --corpus=synthetic` and a training config without sizes both get from `scan`.
N_SPEAKERS, UTTERANCES_PER_EMOTION = 10, 5


@dataclasses.dataclass(frozen=True)
class Prosody:
    """How an emotion sounds relative to the speaker's own voice."""

    pitch: float  # F0 as a ratio to the speaker's base pitch.
    pitch_range: float  # Semitones of the pitch accent on a stressed syllable.
    slope: float  # Semitones of F0 change across the utterance: < 0 falling, > 0 rising.
    syllable: float  # Mean syllable duration in seconds (speaking rate).
    pause: float  # Mean pause between words in seconds.
    energy: float  # Level in dB relative to neutral.
    brightness: float  # Corner frequency (Hz) of the glottal source: higher = flatter spectral tilt.
    jitter: float  # Per-period F0 perturbation, relative to the period.
    shimmer: float  # Per-period amplitude perturbation, relative.
    breathiness: float  # Aspiration noise relative to the voiced source.
    tremor: float  # Semitones of ~6 Hz F0 modulation.


PROSODY = {
    "neutral": Prosody(1.00, 2.0, -2.0, 0.18, 0.10, 0.0, 300, 0.005, 0.03, 0.05, 0.0),
    "calm": Prosody(0.94, 1.5, -1.5, 0.21, 0.13, -3.0, 200, 0.004, 0.03, 0.12, 0.0),
    "happy": Prosody(1.22, 5.0, -1.0, 0.155, 0.08, 3.0, 550, 0.008, 0.04, 0.05, 0.0),
    "sad": Prosody(0.88, 1.0, -3.0, 0.23, 0.16, -6.0, 150, 0.015, 0.06, 0.20, 0.2),
    "angry": Prosody(1.28, 4.0, -4.0, 0.14, 0.06, 6.0, 900, 0.015, 0.08, 0.03, 0.0),
    "fearful": Prosody(1.38, 3.0, 1.0, 0.145, 0.11, 0.0, 450, 0.025, 0.06, 0.15, 0.7),
    "disgust": Prosody(0.90, 3.0, -3.5, 0.22, 0.13, 1.0, 350, 0.030, 0.10, 0.08, 0.0),
    "surprised": Prosody(1.42, 7.0, 5.0, 0.165, 0.09, 2.0, 600, 0.008, 0.04, 0.08, 0.0),
    "boredom": Prosody(0.90, 0.8, -1.0, 0.23, 0.14, -4.0, 200, 0.006, 0.04, 0.10, 0.0),
}
# Fields blended and varied additively (they may be 0 or negative); the rest are ratios, varied in log.
_ADDITIVE = frozenset({"slope", "energy", "tremor"})
# Spread of the per-utterance variation: log-ratio for ratio fields, absolute for additive ones.
_VARIATION = {"pitch": 0.06, "pitch_range": 0.3, "slope": 1.5, "syllable": 0.1, "pause": 0.3, "energy": 2.0,
              "brightness": 0.25, "jitter": 0.3, "shimmer": 0.3, "breathiness": 0.3, "tremor": 0.1}
STRONG_EXPRESSIVENESS = 1.5  # How much further from neutral a "strong" utterance goes.

# Formants (Hz) of an adult male vowel set (a, i, u, e, o, ae); speakers scale them.
VOWELS = np.array([(730, 1090, 2440, 3400), (270, 2290, 3010, 3700), (300, 870, 2240, 3300),
                   (530, 1840, 2480, 3500), (570, 840, 2410, 3300), (660, 1720, 2410, 3400)], dtype=np.float64)
BANDWIDTHS = np.array([90.0, 110.0, 170.0, 250.0])
# Fricatives (s, sh, f, h): noise band in Hz and level relative to the vowels.
FRICATIVES = ((4000, 7500, 0.45), (2000, 4500, 0.45), (1000, 7000, 0.2), (600, 3000, 0.2))


def speaker_gender(speaker: int) -> str:
    """Even speakers are male, odd female: speaker i is RAVDESS actor i + 1 (odd actors are male)."""
    return "male" if speaker % 2 == 0 else "female"


def is_strong(emotion: str, utterance: int) -> bool:
    """Every other pair of utterances is "strong" (RAVDESS intensity 02); neutral never is."""
    return emotion != "neutral" and (utterance // 2) % 2 == 1


@dataclasses.dataclass(frozen=True)
class _Voice:
    f0: float  # Base pitch in Hz.
    formant_scale: float  # Shorter vocal tracts have higher formants.
    rate: float  # Multiplies syllable durations.
    expressiveness: float  # How far this speaker's emotions move from their neutral.
    brightness: float  # Multiplies the source corner frequency.
    level: float  # dB.


def _voice(seed: int, speaker: int) -> _Voice:
    rng = np.random.default_rng([seed, 1, speaker])
    male = speaker_gender(speaker) == "male"
    f0_range, formant_range = ((95, 145), (0.92, 1.02)) if male else ((175, 250), (1.10, 1.20))
    return _Voice(f0=float(np.exp(rng.uniform(*np.log(f0_range)))), formant_scale=rng.uniform(*formant_range),
                  rate=float(np.exp(rng.normal(0, 0.1))), expressiveness=rng.uniform(0.6, 1.2),
                  brightness=float(np.exp(rng.normal(0, 0.2))), level=rng.normal(0, 2))


def _prosody(emotion: str, voice: _Voice, strong: bool, rng: np.random.Generator) -> Prosody:
    """The emotion's prosody scaled by the speaker's expressiveness, plus this utterance's variation."""
    k = voice.expressiveness * (STRONG_EXPRESSIVENESS if strong else 1.0)
    neutral, target = PROSODY["neutral"], PROSODY[emotion]
    values = {}
    for field in dataclasses.fields(Prosody):
        n, t, spread = getattr(neutral, field.name), getattr(target, field.name), _VARIATION[field.name]
        if field.name in _ADDITIVE:
            values[field.name] = n + k * (t - n) + rng.normal(0, spread)
        else:
            values[field.name] = n * (t / n) ** k * np.exp(rng.normal(0, spread))
    return Prosody(**values)


@dataclasses.dataclass(frozen=True)
class _Sentence:
    vowel: np.ndarray  # Index into VOWELS per syllable.
    fricative: np.ndarray  # Index into FRICATIVES of the onset, or -1 for none.
    stressed: np.ndarray
    word_end: np.ndarray  # A pause follows.
    length: np.ndarray  # Relative syllable duration.


@functools.lru_cache(maxsize=None)
def _sentence(seed: int, statement: int) -> _Sentence:
    rng = np.random.default_rng([seed, 2, statement])
    n = int(rng.integers(6, 9))
    stressed = rng.random(n) < 0.35
    word_end = rng.random(n) < 0.3
    word_end[-1] = False
    return _Sentence(vowel=rng.integers(0, len(VOWELS), n),
                     fricative=np.where(rng.random(n) < 0.6, rng.integers(0, len(FRICATIVES), n), -1),
                     stressed=stressed, word_end=word_end, length=rng.uniform(0.8, 1.2, n) * (1 + 0.25 * stressed))


def _ramped(length: int, ramp: int) -> np.ndarray:
    """A window with raised-cosine onset and offset, so segments do not click."""
    window = np.ones(length)
    r = min(ramp, length // 2)
    if r:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        window[:r], window[length - r:] = rise, rise[::-1]
    return window


@functools.lru_cache(maxsize=None)
def _fricative_filter(kind: int, sample_rate: int) -> np.ndarray:
    low, high, _ = FRICATIVES[kind]
    high = min(high, 0.45 * sample_rate)
    return signal.butter(2, [min(low, 0.5 * high), high], btype="band", fs=sample_rate, output="sos")


def _resonators(formants: np.ndarray, sample_rate: int) -> np.ndarray:
    """Formant frequencies (4,) -> a cascade of second-order resonators (4, 6) with unit gain at DC."""
    r = np.exp(-np.pi * BANDWIDTHS / sample_rate)
    a1 = -2 * r * np.cos(2 * np.pi * formants / sample_rate)
    a2 = np.broadcast_to(r * r, a1.shape)
    sos = np.zeros(formants.shape + (6,))
    sos[..., 0], sos[..., 3], sos[..., 4], sos[..., 5] = 1 + a1 + a2, 1.0, a1, a2
    sos[formants >= 0.45 * sample_rate] = (1, 0, 0, 1, 0, 0)  # Above Nyquist: pass through.
    return sos


def synthesize(emotion: str, speaker: int, utterance: int, *, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """One utterance, float32 mono in [-1, 1], 1.5-3 s; bit-identical for the same arguments."""
    if emotion not in PROSODY:
        raise ValueError(f"Unknown emotion {emotion!r}; the generator knows {', '.join(PROSODY)}")
    voice = _voice(seed, speaker)
    rng = np.random.default_rng([seed, 3, speaker, base.EMOTIONS.index(emotion), utterance])
    p = _prosody(emotion, voice, is_strong(emotion, utterance), rng)
    words = _sentence(seed, utterance % STATEMENTS)
    n_syllables = len(words.vowel)

    # Timeline (seconds): lead silence, syllables with pauses after word ends, trailing silence.
    syllable = p.syllable * voice.rate * words.length * np.exp(rng.normal(0, 0.08, n_syllables))
    pause = np.where(words.word_end, p.pause * np.exp(rng.normal(0, 0.3, n_syllables)), 0.0)
    lead, trail = rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25)
    speech = syllable.sum() + pause.sum()
    total = float(np.clip(lead + trail + speech, MIN_SECONDS, MAX_SECONDS))
    stretch = (total - lead - trail) / speech
    syllable, pause = syllable * stretch, pause * stretch
    onset = lead + np.concatenate([[0.0], np.cumsum(syllable + pause)[:-1]])
    vowel_onset = onset + np.where(words.fricative >= 0, np.minimum(0.35 * syllable, 0.09), 0.0)
    vowel_end = onset + syllable
    n = int(round(total * sample_rate))

    # Where there is voicing (with per-syllable loudness) and where there is frication.
    voicing = np.zeros(n)
    frication = np.zeros(n)
    fricative_mask = np.zeros(n, dtype=bool)
    ramp = int(0.015 * sample_rate)
    for i in range(n_syllables):
        a, b, c = (int(round(t * sample_rate)) for t in (onset[i], vowel_onset[i], vowel_end[i]))
        loudness = (1.0 if words.stressed[i] else 0.6) * rng.uniform(0.8, 1.2)
        voicing[b:c] = loudness * _ramped(c - b, ramp) * np.linspace(1.0, 0.7, c - b)
        if words.fricative[i] >= 0 and b > a:
            noise = signal.sosfilt(_fricative_filter(int(words.fricative[i]), sample_rate), rng.standard_normal(b - a))
            level = FRICATIVES[words.fricative[i]][2] * loudness
            frication[a:b] = level * noise / (np.std(noise) + 1e-12) * _ramped(b - a, ramp // 3)
            fricative_mask[a:b] = True

    # F0 contour on a 5 ms grid: level, slope, accents on syllables, tremor.
    grid = np.arange(0.0, total + 0.005, 0.005)
    position = np.clip((grid - lead) / (total - lead - trail), 0, 1)
    semitones = p.slope * (position - 0.5) + p.tremor * np.sin(2 * np.pi * 5.5 * grid + rng.uniform(0, 2 * np.pi))
    accent = p.pitch_range * np.where(words.stressed, 1.0, 0.3) * rng.uniform(0.7, 1.3, n_syllables)
    centre, width = (vowel_onset + vowel_end) / 2, (vowel_end - vowel_onset) / 2
    semitones += (accent[:, None] * np.exp(-0.5 * ((grid[None, :] - centre[:, None]) / width[:, None]) ** 2)).sum(0)
    f0_grid = np.clip(voice.f0 * p.pitch * 2 ** (semitones / 12), 50, sample_rate / 8)
    times = np.arange(n) / sample_rate
    f0 = np.interp(times, grid, f0_grid)

    # Glottal source: one pulse per period (jittered, shimmered), low-passed by the glottis and
    # differentiated by lip radiation; breath noise on top.
    pulses = np.flatnonzero(np.diff(np.floor(np.cumsum(f0) / sample_rate))) + 1
    pulses = np.clip(pulses + np.round(p.jitter * sample_rate / f0[pulses] * rng.standard_normal(pulses.size)),
                     0, n - 1).astype(np.int64)
    source = np.zeros(n)
    source[pulses] = voicing[pulses] * (1 + p.shimmer * rng.standard_normal(pulses.size))
    q = np.exp(-2 * np.pi * min(p.brightness * voice.brightness, 0.4 * sample_rate) / sample_rate)
    source = signal.lfilter([(1 - q) ** 2, -(1 - q) ** 2], [1, -2 * q, q * q], source)
    voiced = voicing > 0
    source += p.breathiness * np.std(source[voiced]) * rng.standard_normal(n) * voicing

    # Vocal tract: each vowel's resonator cascade, cross-faded from one syllable's vowel to the next
    # (a time-varying filter would need a Python loop over blocks, many times slower).
    vowels = np.zeros(n)
    for v in np.unique(words.vowel):
        weight = np.interp(times, centre, (words.vowel == v).astype(np.float64))
        vowels += weight * signal.sosfilt(_resonators(VOWELS[v] * voice.formant_scale, sample_rate), source)

    # Levels: speech at the emotion's loudness, room noise at a level of its own.
    speech = vowels / (np.std(vowels[voiced]) + 1e-12) + frication
    active = voiced | fricative_mask
    speech *= 10 ** ((-26 + p.energy + voice.level) / 20) / (np.sqrt(np.mean(speech[active] ** 2)) + 1e-12)
    room = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    speech += room / np.std(room) * 10 ** (rng.uniform(-60, -48) / 20)
    peak = np.max(np.abs(speech))
    if peak > 0.99:
        speech *= 0.99 / peak
    return speech.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one corpus names its files, and how many speakers and utterances it can name."""

    emotions: tuple[str, ...]
    speakers: Callable[[int], list[tuple[str, int]]]  # n -> (corpus speaker id, generator speaker).
    max_speakers: int
    max_utterances: int
    relative_path: Callable[[str, str, int], str]  # (speaker id, emotion, utterance) -> path without extension.


def _code(table: dict[str, str], emotion: str) -> str:
    """The corpus' code for an emotion (the first one, where a table also lists variants)."""
    return next(code for code, label in table.items() if label == emotion)


def _numbered(first: int, width: int) -> Callable[[int], list[tuple[str, int]]]:
    """Corpora that number speakers: generator speaker i is the i-th id (genders alternate)."""
    return lambda n: [(f"{first + i:0{width}d}", i) for i in range(n)]


def _by_gender(genders: dict[str, str]) -> Callable[[int], list[tuple[str, int]]]:
    """Corpora with a fixed cast: the k-th male is generator speaker 2k, the k-th female 2k + 1."""
    def speakers(n: int) -> list[tuple[str, int]]:
        seen = {"male": 0, "female": 0}
        cast = []
        for speaker_id, gender in list(genders.items())[:n]:
            cast.append((speaker_id, 2 * seen[gender] + (gender == "female")))
            seen[gender] += 1
        return cast
    return speakers


def _ravdess_path(actor: str, emotion: str, u: int) -> str:
    intensity = "02" if is_strong(emotion, u) else "01"
    return f"Actor_{actor}/03-01-{_code(ravdess.EMOTION_CODES, emotion)}-{intensity}-{u % 2 + 1:02d}-{u // 2 + 1:02d}-{actor}"


def _crema_d_path(speaker: str, emotion: str, u: int) -> str:
    level = "HI" if is_strong(emotion, u) else "XX"
    return f"AudioWAV/{speaker}_{list(crema_d.SENTENCES)[u]}_{_code(crema_d.EMOTION_CODES, emotion)}_{level}"


TESS_WORDS = ("back", "bar", "base", "bath", "bean", "beg", "bite", "boat", "bone", "book", "bought", "burn",
              "cab", "calm", "came", "cause", "chain", "chair", "chalk", "chat", "check", "cheek", "chief", "choice")


def _tess_path(speaker: str, emotion: str, u: int) -> str:
    word = _code(tess.EMOTION_WORDS, emotion)
    return f"{speaker}_{word}/{speaker}_{TESS_WORDS[u]}_{word}"


def _emodb_path(speaker: str, emotion: str, u: int) -> str:
    text, version = emodb.TEXTS[u % len(emodb.TEXTS)], string.ascii_lowercase[u // len(emodb.TEXTS)]
    return f"wav/{speaker}{text}{_code(emodb.EMOTION_CODES, emotion)}{version}"


def _savee_path(speaker: str, emotion: str, u: int) -> str:
    return f"AudioData/{speaker}/{_code(savee.EMOTION_CODES, emotion)}{u + 1:02d}"


def _emotions(table: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(table.values()))


LAYOUTS = {
    "ravdess": _Layout(_emotions(ravdess.EMOTION_CODES), _numbered(1, 2), 99, 2 * 99, _ravdess_path),
    "crema_d": _Layout(_emotions(crema_d.EMOTION_CODES), _numbered(crema_d.FIRST_SPEAKER, 4),
                       crema_d.LAST_SPEAKER - crema_d.FIRST_SPEAKER + 1, len(crema_d.SENTENCES), _crema_d_path),
    "tess": _Layout(_emotions(tess.EMOTION_WORDS), _by_gender(tess.SPEAKERS), len(tess.SPEAKERS), len(TESS_WORDS),
                    _tess_path),
    "emodb": _Layout(_emotions(emodb.EMOTION_CODES), _by_gender(emodb.SPEAKERS), len(emodb.SPEAKERS),
                     len(emodb.TEXTS) * 26, _emodb_path),
    "savee": _Layout(_emotions(savee.EMOTION_CODES), _by_gender(savee.SPEAKERS), len(savee.SPEAKERS), 99,
                     _savee_path),
}


def write_corpus(out_dir: str, layout: str = "ravdess", *, n_speakers: int = N_SPEAKERS,
                 utterances_per_emotion: int = UTTERANCES_PER_EMOTION,
                 sample_rate: int = 16000, seed: int = 0, audio_format: str = "wav",
                 emotions: Sequence[str] | None = None, channels: int = 1) -> list[str]:
    """Writes a corpus in `layout`'s folders and file names; returns the audio files' paths.

    Only emotions the layout can name are written (default: all of them). Speakers and utterances
    per emotion are capped at what its names can express (TESS has 2 speakers, SAVEE 4, EMO-DB 10;
    CREMA-D 12 sentences). Genders match the corpus' own (CREMA-D gets a VideoDemographics.csv).
    Rewriting gives identical files, so the call is idempotent. `channels=2` writes stereo.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    if audio_format not in ("wav", "flac"):
        raise ValueError(f"audio_format must be 'wav' or 'flac', got {audio_format!r}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    spec = LAYOUTS[layout]
    unknown = [e for e in emotions or () if e not in PROSODY]
    if unknown:
        raise ValueError(f"Unknown emotions {unknown}; the generator knows {', '.join(PROSODY)}")
    wanted = spec.emotions if emotions is None else [e for e in emotions if e in spec.emotions]
    cast = spec.speakers(min(n_speakers, spec.max_speakers))
    paths = []
    for speaker_id, speaker in cast:
        for emotion in wanted:
            for u in range(min(utterances_per_emotion, spec.max_utterances)):
                path = os.path.join(out_dir, f"{spec.relative_path(speaker_id, emotion, u)}.{audio_format}")
                wave = synthesize(emotion, speaker, u, sample_rate=sample_rate, seed=seed)
                if channels == 2:  # A quieter copy on the right, so a down-mix is not a no-op.
                    wave = np.stack([wave, 0.8 * wave], axis=1)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sf.write(path, wave, sample_rate, subtype="PCM_16")
                paths.append(path)
    if layout == "crema_d":
        _write_demographics(out_dir, cast)
    return paths


def _write_demographics(out_dir: str, cast: Iterable[tuple[str, int]]):
    with open(os.path.join(out_dir, crema_d.DEMOGRAPHICS_FILE), "w", encoding="utf-8") as f:
        f.write("ActorID,Sex\n")
        f.writelines(f"{speaker_id},{speaker_gender(speaker).capitalize()}\n" for speaker_id, speaker in cast)


MARKER = "synthetic_corpus.json"


def scan(source_dir: str, *, n_speakers: int = N_SPEAKERS, utterances_per_emotion: int = UTTERANCES_PER_EMOTION,
         seed: int = 0) -> base.Scan:
    """Generates the corpus (RAVDESS layout) when `source_dir` is missing or empty, then reads it.

    Generation writes into a hidden sibling folder that is renamed into place only once complete,
    with the generator's settings in `MARKER`: an interrupted run leaves no half corpus that a later
    one would read as whole, and asking a generated folder for other settings is an error rather
    than a silent reuse. A folder of audio without the marker (your own files in the RAVDESS layout)
    is read as it is.
    """
    wanted = {"layout": "ravdess", "n_speakers": n_speakers, "utterances_per_emotion": utterances_per_emotion,
              "seed": seed}
    marker = os.path.join(source_dir, MARKER)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            found = json.load(f)
        if found != wanted:
            raise ValueError(f"{source_dir} holds a synthetic corpus generated with {found}, not the requested "
                             f"{wanted}; use another folder or delete that one")
    elif not os.path.isdir(source_dir) or next(iter(base.audio_files(source_dir)), None) is None:
        _generate_into_place(source_dir, wanted)
    return base.scan_files(source_dir, functools.partial(ravdess.parse, corpus=NAME))


def _generate_into_place(source_dir: str, settings: dict):
    if os.path.isdir(source_dir) and os.listdir(source_dir):
        raise ValueError(f"{source_dir} holds no audio but is not empty: the synthetic corpus is generated "
                         f"only into a new or empty folder")
    parent, name = os.path.split(os.path.abspath(source_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.incomplete-")
    try:
        write_corpus(staging, settings["layout"], n_speakers=settings["n_speakers"],
                     utterances_per_emotion=settings["utterances_per_emotion"], seed=settings["seed"])
        with open(os.path.join(staging, MARKER), "w", encoding="utf-8") as f:
            json.dump(settings, f)
        if os.path.isdir(source_dir):
            os.rmdir(source_dir)  # Empty (checked above); rename needs the name free on every OS.
        os.rename(staging, source_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
