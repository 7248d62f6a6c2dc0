"""EMO-DB (Burkhardt et al. 2005, Berlin): `wav/03a01Fa.wav` = speaker, text, emotion, version."""

from __future__ import annotations

import re

from data_prep.corpora import base

NAME = "emodb"

SPEAKERS = {
    "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
    "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
# German initials: Wut, Langeweile, Ekel, Angst, Freude, Trauer, Neutral.
EMOTION_CODES = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}

_FILE_NAME = re.compile(r"(\d\d)([a-z]\d\d)([a-z])([a-z]+)", re.IGNORECASE)


def parse(path: str) -> base.Utterance | base.Problem:
    match = _FILE_NAME.fullmatch(base.stem(path))
    if not match:
        return base.Problem(path, "file name does not match EMO-DB SSTTTEV (e.g. 03a01Fa)")
    speaker, text, emotion, _version = match.groups()
    text, emotion = text.lower(), emotion.upper()
    if speaker not in SPEAKERS:
        return base.Problem(path, f"unknown EMO-DB speaker {speaker!r} (expected one of {', '.join(SPEAKERS)})")
    if text not in TEXTS:
        return base.Problem(path, f"unknown text code {text!r} (expected one of {', '.join(TEXTS)})")
    if emotion not in EMOTION_CODES:
        return base.Problem(path, f"unknown emotion code {emotion!r} (expected one of {', '.join(EMOTION_CODES)})")
    return base.Utterance(path=path, corpus=NAME, speaker=f"{NAME}/{speaker}", emotion=EMOTION_CODES[emotion],
                          gender=SPEAKERS[speaker], text=text)


def scan(source_dir: str) -> base.Scan:
    return base.scan_files(source_dir, parse)
