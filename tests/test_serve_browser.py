"""The server's page in a real browser: headless Debian Chromium (driven by Playwright, never a
downloaded browser) with a fake microphone playing a synthetic angry or sad utterance; the page must
stream it and show that emotion. Skips, saying why, where Chromium or Playwright is missing.

`SER_JAX_SCREENSHOT=docs/serve_page.png` saves the page (after the angry clip) for the README.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr

from data_prep.corpora import synthetic

from live_server import start_server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="no chromium binary on PATH (Debian: apt-get install chromium)")
SMOOTHING = 3


@pytest.fixture(scope="module")
def server(angry_sad_workdir):
    proc, url = start_server(angry_sad_workdir, "--buckets=1,4")
    yield url
    out = stop_server(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        yield playwright.chromium


def utterance(emotion: str, path) -> str:
    """An unseen speaker's utterance at 48 kHz, the rate a sound card gives the page."""
    wave = np.concatenate([synthetic.synthesize(emotion, 9, u, sample_rate=16000) for u in (0, 1)])
    sf.write(str(path), soxr.resample(wave, 16000, 48000), 48000, subtype="PCM_16")
    return str(path)


@pytest.mark.parametrize("emotion", ["angry", "sad"])
def test_page_listens_to_the_microphone_and_shows_the_emotion(server, browser, emotion, tmp_path):
    mic = utterance(emotion, tmp_path / f"{emotion}.wav")
    chromium = browser.launch(executable_path=CHROMIUM, args=[
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"])
    try:
        page = chromium.new_page(viewport={"width": 1000, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
        page.fill("#smoothing", str(SMOOTHING))
        page.click("#listen")
        page.wait_for_function("estimates.length >= 12", timeout=90_000)  # 6 s of microphone audio.
        labels = page.evaluate("estimates.map(e => e.label)")
        shown = page.inner_text("#label")
        # The label on the page is the emotion heard, and so are (nearly) all the smoothed estimates.
        assert shown == emotion, (shown, labels)
        assert labels.count(emotion) >= 0.75 * len(labels), labels
        assert page.evaluate("estimates[estimates.length - 1].time") >= 6.0
        # A file chosen on the page is classified too.
        page.set_input_files("#file", mic)
        page.wait_for_selector("#upload-label", timeout=60_000)
        assert page.inner_text("#upload-label") == emotion
        assert "from" in page.inner_text("#upload")  # The 4.4 s file is longer than the window: segments.
        if emotion == "angry" and os.environ.get("SER_JAX_SCREENSHOT"):
            page.screenshot(path=os.environ["SER_JAX_SCREENSHOT"], full_page=True)
        page.click("#listen")  # Stop: the page ends the stream.
        page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
        assert not errors, errors
    finally:
        chromium.close()
