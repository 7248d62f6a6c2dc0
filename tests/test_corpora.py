"""Corpus readers: labels parsed from names, bad names reported, every layout read back."""

import collections
import pathlib

import pytest
import soundfile as sf

from data_prep.corpora import base, crema_d, emodb, ravdess, savee, synthetic, tess

READERS = {"ravdess": ravdess, "crema_d": crema_d, "tess": tess, "emodb": emodb, "savee": savee}
EMOTION_TABLES = [ravdess.EMOTION_CODES, crema_d.EMOTION_CODES, tess.EMOTION_WORDS, emodb.EMOTION_CODES,
                  savee.EMOTION_CODES]


def touch(root: pathlib.Path, *names: str):
    """Readers only parse names, so empty files are enough where no audio is needed."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def test_every_corpus_name_has_a_reader():
    for name in base.CORPUS_NAMES:
        module = base.get_corpus(name)
        assert module.NAME == name and callable(module.scan)


@pytest.mark.parametrize("table", EMOTION_TABLES)
def test_emotion_tables_map_into_the_vocabulary(table):
    assert set(table.values()) <= set(base.EMOTIONS)


def test_label_tables_are_complete():
    assert sorted(ravdess.EMOTION_CODES) == [f"{i:02d}" for i in range(1, 9)]
    assert len(set(ravdess.EMOTION_CODES.values())) == 8
    assert set(crema_d.EMOTION_CODES.values()) == {"angry", "disgust", "fearful", "happy", "neutral", "sad"}
    assert len(crema_d.SENTENCES) == 12
    assert set(tess.EMOTION_WORDS.values()) == {"angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad"}
    assert set(emodb.EMOTION_CODES.values()) == {"angry", "boredom", "disgust", "fearful", "happy", "sad", "neutral"}
    assert set(savee.EMOTION_CODES.values()) == {"angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"}
    for genders in (tess.SPEAKERS, emodb.SPEAKERS, savee.SPEAKERS):
        assert set(genders.values()) <= set(base.GENDERS)
    assert collections.Counter(emodb.SPEAKERS.values()) == {"male": 5, "female": 5}


# Two speakers, three utterances per emotion (the third is "strong"): what each reader must see.
LAYOUT_EXPECTED = {
    "ravdess": ({"ravdess/01": "male", "ravdess/02": "female"}, {"01", "02"}, {"normal", "strong"}),
    "crema_d": ({"crema_d/1001": "male", "crema_d/1002": "female"}, {"IEO", "TIE", "IOM"}, {"unspecified", "high"}),
    "tess": ({"tess/OAF": "female", "tess/YAF": "female"}, {"back", "bar", "base"}, {""}),
    "emodb": ({"emodb/03": "male", "emodb/08": "female"}, {"a01", "a02", "a04"}, {""}),
    "savee": ({"savee/DC": "male", "savee/JE": "male"}, {"01", "02", "03"}, {""}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_EXPECTED))
def test_reader_reads_back_its_synthetic_layout(tmp_path, layout):
    written = synthetic.write_corpus(str(tmp_path), layout, n_speakers=2, utterances_per_emotion=3)
    scan = READERS[layout].scan(str(tmp_path))
    speakers, texts, intensities = LAYOUT_EXPECTED[layout]
    emotions = synthetic.LAYOUTS[layout].emotions
    assert scan.problems == []
    assert sorted(u.path for u in scan.utterances) == sorted(written)
    assert len(scan.utterances) == 2 * len(emotions) * 3
    assert collections.Counter(u.emotion for u in scan.utterances) == {e: 2 * 3 for e in emotions}
    assert {u.speaker: u.gender for u in scan.utterances} == speakers
    assert {u.text for u in scan.utterances} == texts
    assert {u.intensity for u in scan.utterances} == intensities
    assert {u.corpus for u in scan.utterances} == {layout}


def test_stereo_48khz_flac_is_written_and_read(tmp_path):
    written = synthetic.write_corpus(str(tmp_path), "ravdess", n_speakers=1, utterances_per_emotion=1,
                                     emotions=["angry", "sad"], sample_rate=48000, channels=2, audio_format="flac")
    info = sf.info(written[0])
    assert (info.format, info.channels, info.samplerate) == ("FLAC", 2, 48000)
    scan = ravdess.scan(str(tmp_path))
    assert sorted(u.emotion for u in scan.utterances) == ["angry", "sad"] and scan.problems == []


# Per reader: good names with (emotion, speaker, gender, text, intensity), and bad names with the
# words their Problem must contain.
NAME_CASES = {
    "ravdess": (
        {"Actor_12/03-01-05-02-01-01-12.WAV": ("angry", "ravdess/12", "female", "01", "strong"),
         "03-01-08-01-02-02-07.flac": ("surprised", "ravdess/07", "male", "02", "normal")},
        {"Actor_01/03-01-09-01-01-01-01.wav": "unknown emotion code '09'",
         "Actor_01/03-01-01-01-01-01.wav": "does not match RAVDESS MM-VV-EE-II-SS-RR-AA",
         "Actor_01/04-01-01-01-01-01-01.wav": "unknown modality code '04'",
         "Actor_01/03-03-01-01-01-01-01.wav": "unknown vocal channel code '03'",
         "Actor_01/03-01-01-03-01-01-01.wav": "unknown intensity code '03'",
         "Actor_01/03-01-01-01-03-01-01.wav": "unknown statement code '03'",
         "Actor_01/03-01-01-01-01-01-00.wav": "actor number 00"}),
    "crema_d": (
        {"AudioWAV/1001_DFA_ANG_XX.wav": ("angry", "crema_d/1001", "unknown", "DFA", "unspecified"),
         "AudioWAV/1091_ieo_hap_lo.WAV": ("happy", "crema_d/1091", "unknown", "IEO", "low")},
        {"AudioWAV/1001_DFA_XYZ_XX.wav": "unknown emotion code 'XYZ'",
         "AudioWAV/1001_ABC_ANG_XX.wav": "unknown sentence code 'ABC'",
         "AudioWAV/1001_DFA_ANG_ZZ.wav": "unknown level code 'ZZ'",
         "AudioWAV/1092_DFA_ANG_XX.wav": "speaker 1092 outside CREMA-D's 1001-1091",
         "AudioWAV/1001-DFA-ANG-XX.wav": "does not match CREMA-D"}),
    "tess": (
        {"OAF_angry/OAF_back_angry.wav": ("angry", "tess/OAF", "female", "back", ""),
         "OAF_Fear/OAF_back_fear.wav": ("fearful", "tess/OAF", "female", "back", ""),
         "YAF_pleasant_surprised/YAF_bath_ps.wav": ("surprised", "tess/YAF", "female", "bath", ""),
         "OAF_Pleasant_surprise/OAF_bath_pleasant_surprise.wav": ("surprised", "tess/OAF", "female", "bath", ""),
         "YAF_neutral/YAF_Back_Neutral.WAV": ("neutral", "tess/YAF", "female", "back", ""),
         "OAF_neutral/OA_bite_neutral.wav": ("neutral", "tess/OAF", "female", "bite", "")},
        {"OAF_bored/OAF_back_bored.wav": "unknown emotion word 'bored'",
         "XAF_angry/XAF_back_angry.wav": "unknown TESS speaker 'XAF'",
         "YAF_angry/OA_back_angry.wav": "unknown TESS speaker 'OA'",
         "OAF_angry/OAFbackangry.wav": "does not match TESS SPEAKER_WORD_EMOTION"}),
    "emodb": (
        {"wav/03a01Wa.wav": ("angry", "emodb/03", "male", "a01", ""),
         "wav/16b10Lb.wav": ("boredom", "emodb/16", "female", "b10", "")},
        {"wav/05a01Fa.wav": "unknown EMO-DB speaker '05'",
         "wav/03c01Fa.wav": "unknown text code 'c01'",
         "wav/03a01Xa.wav": "unknown emotion code 'X'",
         "wav/3a01Fa.wav": "does not match EMO-DB"}),
    "savee": (
        {"ALL/DC_sa03.wav": ("sad", "savee/DC", "male", "03", ""),
         "AudioData/KL/su15.wav": ("surprised", "savee/KL", "male", "15", ""),
         "AudioData/je/A01.WAV": ("angry", "savee/JE", "male", "01", "")},
        {"ALL/XX_a01.wav": "unknown SAVEE speaker 'XX' from the name prefix",
         "AudioData/a01.wav": "unknown SAVEE speaker 'AUDIODATA' from the folder name",
         "AudioData/DC/z01.wav": "unknown emotion code 'z'",
         "AudioData/DC/a.wav": "does not match SAVEE"}),
}


@pytest.mark.parametrize("corpus", sorted(NAME_CASES))
def test_bad_names_become_problems_and_good_files_are_kept(tmp_path, corpus):
    good, bad = NAME_CASES[corpus]
    touch(tmp_path, *good, *bad, "README.txt", "notes/Info.TXT")
    scan = READERS[corpus].scan(str(tmp_path))
    found = {pathlib.Path(u.path).relative_to(tmp_path).as_posix():
             (u.emotion, u.speaker, u.gender, u.text, u.intensity) for u in scan.utterances}
    assert found == good
    problems = {pathlib.Path(p.path).relative_to(tmp_path).as_posix(): p.reason for p in scan.problems}
    assert set(problems) == set(bad)
    for name, words in bad.items():
        assert words in problems[name], (name, problems[name])


def test_ravdess_song_is_left_out_unless_asked_for(tmp_path):
    touch(tmp_path, "Actor_01/03-01-05-01-01-01-01.wav", "Actor_01/03-02-05-01-01-01-01.wav",
          "Actor_02/03-02-03-02-02-01-02.wav")
    default = ravdess.scan(str(tmp_path))
    assert [pathlib.Path(u.path).name for u in default.utterances] == ["03-01-05-01-01-01-01.wav"]
    assert default.problems == []
    with_song = ravdess.scan(str(tmp_path), include_song=True)
    assert len(with_song.utterances) == 3 and with_song.problems == []


def test_crema_d_genders_from_demographics_in_parent_folder(tmp_path):
    touch(tmp_path, "AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1002_DFA_ANG_XX.wav", "AudioWAV/1003_DFA_ANG_XX.wav")
    (tmp_path / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n1001,51,Male,Caucasian,Not Hispanic\n'
        "1002,21,Female,Caucasian,Not Hispanic\n")
    scan = crema_d.scan(str(tmp_path / "AudioWAV"))
    assert {u.speaker: u.gender for u in scan.utterances} == {
        "crema_d/1001": "male", "crema_d/1002": "female", "crema_d/1003": "unknown"}
    assert scan.problems == []


def test_crema_d_unreadable_demographics_is_reported(tmp_path):
    touch(tmp_path, "AudioWAV/1001_DFA_ANG_XX.wav")
    (tmp_path / "videodemographics.csv").write_text("Actor,Gender\n1001,Male\n")
    scan = crema_d.scan(str(tmp_path))
    assert [u.gender for u in scan.utterances] == ["unknown"]
    [problem] = scan.problems
    assert problem.path.endswith("videodemographics.csv") and "ActorID and Sex" in problem.reason


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tess.scan(str(tmp_path / "nowhere"))


def test_real_ravdess(ravdess_dir):
    scan = ravdess.scan(str(ravdess_dir))
    assert scan.problems == []
    assert len(scan.utterances) == 1080
    emotions = collections.Counter(u.emotion for u in scan.utterances)
    assert emotions == {e: 72 if e == "neutral" else 144 for e in ravdess.EMOTION_CODES.values()}
    per_speaker = collections.Counter(u.speaker for u in scan.utterances)
    assert per_speaker == {f"ravdess/{a:02d}": 60 for a in range(1, 19)}
    genders = {u.speaker: u.gender for u in scan.utterances}
    assert genders == {f"ravdess/{a:02d}": "male" if a % 2 else "female" for a in range(1, 19)}
