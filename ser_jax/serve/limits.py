"""What one client may ask of the server (each a command-line flag), and the real-time pace check.

The limits keep a bad or greedy client from hurting the others: an upload cannot hold the server's
memory or CPU for long, a stream cannot send audio much faster than it is spoken (which would take
other streams' share of the model), and past `max_streams` or `max_pending_windows` new work is
refused at once (503 / close code 1013) instead of every stream falling behind.
"""

from __future__ import annotations

import dataclasses
import time


def _limit(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Limits:
    """Each field is the flag --NAME of `python -m ser_jax.serve`."""
    max_streams: int = _limit(128, "open WebSocket streams; more are closed with 1013")
    max_pending_windows: int = _limit(128, "windows waiting for the model; past it new work gets 503 / 1013")
    max_upload_bytes: int = _limit(20 * 1024 * 1024, "bytes of one POST /v1/predict body; more gets 413")
    max_uploads: int = _limit(4, "uploads decoded and classified at once; more get 503")
    max_stream_s: float = _limit(3600.0, "seconds of audio one stream may send")
    burst_s: float = _limit(10.0, "seconds of audio a stream may send ahead of real time...")
    max_speed: float = _limit(1.25, "...on top of this many seconds of audio per second")
    idle_timeout_s: float = _limit(30.0, "a stream that sends nothing for this long is closed")
    max_message_bytes: int = _limit(1024 * 1024, "bytes of one WebSocket message (1009 past it)")
    drain_s: float = _limit(10.0, "on SIGTERM, how long open streams get to receive their last estimates")


class RealTimePace:
    """Checks a stream against `burst_s + max_speed * elapsed` seconds of audio since it started."""

    def __init__(self, burst_s: float, max_speed: float):
        self.burst_s, self.max_speed = burst_s, max_speed
        self.start = time.monotonic()

    def excess(self, audio_s: float) -> str | None:
        """Why `audio_s` seconds of audio received so far is too fast, or None if it is within pace."""
        elapsed = time.monotonic() - self.start
        allowed = self.burst_s + self.max_speed * elapsed
        if audio_s <= allowed:
            return None
        return (f"sending faster than real time: {audio_s:.1f} s of audio in {elapsed:.1f} s "
                f"(allowed: {self.burst_s:g} s ahead plus {self.max_speed:g}x real time)")
