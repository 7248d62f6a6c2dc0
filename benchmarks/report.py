"""Saving a benchmark's figures with what they ran on (they only compare on the same machine)."""

import json
import os
import platform


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus_available": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def save(figures: dict, path: str) -> None:
    """Writes `figures` and the machine as JSON to `path` (benchmarks/results/ by default)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({**figures, "machine": machine()}, f, indent=1)
    print(f"Saved {path}")
