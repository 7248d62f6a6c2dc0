"""SAVEE (Surrey, 4 male speakers): `AudioData/DC/a01.wav`, or flat copies named `DC_a01.wav`."""

from __future__ import annotations

import os
import re

from data_prep.corpora import base

NAME = "savee"

SPEAKERS = {"DC": "male", "JE": "male", "JK": "male", "KL": "male"}
EMOTION_CODES = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad",
                 "su": "surprised"}

_FILE_NAME = re.compile(r"(?:([a-z]+)_)?([a-z]+)(\d+)")


def parse(path: str) -> base.Utterance | base.Problem:
    """The speaker is the name's prefix when there is one, else the folder the file is in."""
    match = _FILE_NAME.fullmatch(base.stem(path).lower())
    if not match:
        return base.Problem(path, "file name does not match SAVEE [SPEAKER_]CODENN (e.g. DC_a01, or a01 in DC/)")
    prefix, code, number = match.groups()
    speaker = (prefix or os.path.basename(os.path.dirname(path))).upper()
    if speaker not in SPEAKERS:
        origin = "name prefix" if prefix else "folder name"
        return base.Problem(path, f"unknown SAVEE speaker {speaker!r} from the {origin} "
                                  f"(expected one of {', '.join(SPEAKERS)})")
    if code not in EMOTION_CODES:
        return base.Problem(path, f"unknown emotion code {code!r} (expected one of {', '.join(EMOTION_CODES)})")
    return base.Utterance(path=path, corpus=NAME, speaker=f"{NAME}/{speaker}", emotion=EMOTION_CODES[code],
                          gender=SPEAKERS[speaker], text=number)


def scan(source_dir: str) -> base.Scan:
    return base.scan_files(source_dir, parse)
