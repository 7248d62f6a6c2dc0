"""What every corpus reader produces: utterances with canonical labels, and the files it rejected."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from typing import Any, Callable, Iterable, Mapping, Protocol

from ser_jax.audio import find_audio_files
from ser_jax.dataset_format import EMOTIONS

GENDERS: tuple[str, ...] = ("female", "male", "unknown")


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled recording, as found on disk."""

    path: str
    corpus: str
    speaker: str  # Corpus-qualified, e.g. "ravdess/03", so speakers never collide across corpora.
    emotion: str  # One of EMOTIONS.
    gender: str = "unknown"  # One of GENDERS.
    text: str = ""  # Sentence / text id where the corpus has one.
    intensity: str = ""  # Corpus' own intensity word ("normal", "strong", "low", ...) or "".

    def __post_init__(self):
        if self.emotion not in EMOTIONS:
            raise ValueError(f"{self.path}: emotion {self.emotion!r} is not one of {EMOTIONS}")
        if self.gender not in GENDERS:
            raise ValueError(f"{self.path}: gender {self.gender!r} is not one of {GENDERS}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why (reported by name, never silently dropped)."""

    path: str
    reason: str


@dataclasses.dataclass
class Scan:
    utterances: list[Utterance] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)


class Corpus(Protocol):
    """A reader module: `data_prep/corpora/<name>.py` defines NAME and `scan(source_dir, **options)`."""

    NAME: str

    def scan(self, source_dir: str, **options) -> Scan: ...


CORPUS_NAMES: tuple[str, ...] = ("ravdess", "crema_d", "tess", "emodb", "savee", "synthetic")


def get_corpus(name: str) -> Corpus:
    """Readers are chosen by name, so a new corpus is one new module in this package."""
    if name not in CORPUS_NAMES:
        raise ValueError(f"Unknown corpus {name!r}; known corpora: {', '.join(CORPUS_NAMES)}")
    return importlib.import_module(f"data_prep.corpora.{name}")


def reader_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` completed with the reader's defaults, so equal choices compare equal however they
    were spelled (a dataset records them to refuse a rebuild with other ones)."""
    params = {p.name: p.default for p in inspect.signature(get_corpus(name).scan).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for the {name} reader; it takes {sorted(params) or 'none'}")
    return {**params, **given}


def audio_files(source_dir: str) -> Iterable[str]:
    """All audio files below `source_dir`, in a stable order (so scans are deterministic)."""
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(f"Corpus folder {source_dir!r} does not exist or is not a folder")
    return find_audio_files(source_dir)


def scan_files(source_dir: str, parse: Callable[[str], Utterance | Problem | None]) -> Scan:
    """Applies a reader's per-file parser to every audio file; None means "left out on purpose"."""
    scan = Scan()
    for path in audio_files(source_dir):
        result = parse(path)
        if isinstance(result, Utterance):
            scan.utterances.append(result)
        elif isinstance(result, Problem):
            scan.problems.append(result)
    return scan


def stem(path: str) -> str:
    """The file name without folder and extension, which is where corpora keep their labels."""
    return os.path.splitext(os.path.basename(path))[0]
