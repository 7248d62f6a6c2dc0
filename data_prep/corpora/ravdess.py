"""RAVDESS (Livingstone & Russo 2018): `Actor_NN/MM-VV-EE-II-SS-RR-AA.wav`, labels in the name."""

from __future__ import annotations

import functools
import re

from data_prep.corpora import base

NAME = "ravdess"

MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
EMOTION_CODES = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}

_FILE_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")


def parse(path: str, *, corpus: str = NAME, include_song: bool = False) -> base.Utterance | base.Problem | None:
    """One file's labels; None for a song recording left out on purpose (not a problem).

    `corpus` lets the synthetic corpus, which uses this layout, share the one parser.
    """
    match = _FILE_NAME.fullmatch(base.stem(path))
    if not match:
        return base.Problem(path, "file name does not match RAVDESS MM-VV-EE-II-SS-RR-AA (e.g. 03-01-05-02-01-01-12)")
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    for code, table, field in ((modality, MODALITIES, "modality"), (channel, VOCAL_CHANNELS, "vocal channel"),
                               (emotion, EMOTION_CODES, "emotion"), (intensity, INTENSITIES, "intensity"),
                               (statement, STATEMENTS, "statement")):
        if code not in table:
            return base.Problem(path, f"unknown {field} code {code!r} (expected one of {', '.join(table)})")
    for code, field in ((repetition, "repetition"), (actor, "actor")):
        if code == "00":
            return base.Problem(path, f"{field} number 00 (numbering starts at 01)")
    if VOCAL_CHANNELS[channel] == "song" and not include_song:
        return None
    return base.Utterance(
        path=path, corpus=corpus, speaker=f"{corpus}/{actor}", emotion=EMOTION_CODES[emotion],
        gender="male" if int(actor) % 2 else "female", text=statement, intensity=INTENSITIES[intensity])


def scan(source_dir: str, *, include_song: bool = False) -> base.Scan:
    """Speech recordings only by default: song (vocal channel 02) is sung, not spoken, emotion."""
    return base.scan_files(source_dir, functools.partial(parse, include_song=include_song))
