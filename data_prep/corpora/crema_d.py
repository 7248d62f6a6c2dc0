"""CREMA-D (Cao et al. 2014): `AudioWAV/1001_DFA_ANG_XX.wav`; gender from `VideoDemographics.csv`."""

from __future__ import annotations

import csv
import functools
import os
import re

from data_prep.corpora import base

NAME = "crema_d"
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

FIRST_SPEAKER, LAST_SPEAKER = 1001, 1091
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTION_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SEXES = {"male": "male", "female": "female"}

_FILE_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def find_demographics(source_dir: str) -> str | None:
    """The release keeps the CSV next to AudioWAV/, so look in `source_dir` and its parent."""
    for folder in (source_dir, os.path.dirname(os.path.abspath(source_dir))):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.lower() == DEMOGRAPHICS_FILE.lower():
                    return os.path.join(folder, name)
    return None


def read_demographics(path: str) -> dict[str, str]:
    """Speaker id ("1001") -> gender; raises ValueError when the table lacks ActorID or Sex."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"ActorID", "Sex"} <= set(reader.fieldnames or ()):
            raise ValueError(f"expected columns ActorID and Sex, found {reader.fieldnames}")
        return {row["ActorID"].strip(): SEXES.get(row["Sex"].strip().lower(), "unknown") for row in reader}


def parse(path: str, *, genders: dict[str, str]) -> base.Utterance | base.Problem:
    match = _FILE_NAME.fullmatch(base.stem(path).upper())
    if not match:
        return base.Problem(path, "file name does not match CREMA-D SPEAKER_SENTENCE_EMOTION_LEVEL (e.g. 1001_DFA_ANG_XX)")
    speaker, sentence, emotion, level = match.groups()
    if not FIRST_SPEAKER <= int(speaker) <= LAST_SPEAKER:
        return base.Problem(path, f"speaker {speaker} outside CREMA-D's {FIRST_SPEAKER}-{LAST_SPEAKER}")
    for code, table, field in ((sentence, SENTENCES, "sentence"), (emotion, EMOTION_CODES, "emotion"),
                               (level, LEVELS, "level")):
        if code not in table:
            return base.Problem(path, f"unknown {field} code {code!r} (expected one of {', '.join(table)})")
    return base.Utterance(path=path, corpus=NAME, speaker=f"{NAME}/{speaker}", emotion=EMOTION_CODES[emotion],
                          gender=genders.get(speaker, "unknown"), text=sentence, intensity=LEVELS[level])


def scan(source_dir: str) -> base.Scan:
    """Genders are "unknown" without the demographics table; an unreadable table is reported."""
    genders: dict[str, str] = {}
    table_problem = None
    if table := find_demographics(source_dir):
        try:
            genders = read_demographics(table)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
            table_problem = base.Problem(table, f"demographics table not used, genders unknown: {e}")
    result = base.scan_files(source_dir, functools.partial(parse, genders=genders))
    if table_problem:
        result.problems.insert(0, table_problem)
    return result
