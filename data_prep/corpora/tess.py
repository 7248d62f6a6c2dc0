"""TESS (Toronto emotional speech set): `OAF_angry/OAF_back_angry.wav`, two female speakers."""

from __future__ import annotations

import os
import re

from data_prep.corpora import base

NAME = "tess"

SPEAKERS = {"OAF": "female", "YAF": "female"}  # Older / younger adult female.
# The first word per emotion is the one the release uses in file names; the others occur in copies.
EMOTION_WORDS = {
    "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy", "neutral": "neutral",
    "ps": "surprised", "sad": "sad", "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
}

_FILE_NAME = re.compile(r"([a-z]+)_([a-z0-9']+)_(pleasant_surprised?|[a-z]+)")


def parse(path: str) -> base.Utterance | base.Problem:
    match = _FILE_NAME.fullmatch(base.stem(path).lower())
    if not match:
        return base.Problem(path, "file name does not match TESS SPEAKER_WORD_EMOTION (e.g. OAF_back_angry)")
    speaker, word, emotion = match.groups()
    speaker = speaker.upper()
    folder_speaker = os.path.basename(os.path.dirname(path)).upper().split("_")[0]
    if speaker not in SPEAKERS and folder_speaker in SPEAKERS and folder_speaker.startswith(speaker):
        speaker = folder_speaker  # The release's own slip `OAF_neutral/OA_bite_neutral`: the folder says who.
    if speaker not in SPEAKERS:
        return base.Problem(path, f"unknown TESS speaker {speaker!r} (expected one of {', '.join(SPEAKERS)})")
    if emotion not in EMOTION_WORDS:
        return base.Problem(path, f"unknown emotion word {emotion!r} (expected one of {', '.join(EMOTION_WORDS)})")
    return base.Utterance(path=path, corpus=NAME, speaker=f"{NAME}/{speaker}", emotion=EMOTION_WORDS[emotion],
                          gender=SPEAKERS[speaker], text=word)


def scan(source_dir: str) -> base.Scan:
    """Labels come from file names only: folder names vary between copies of the corpus."""
    return base.scan_files(source_dir, parse)
