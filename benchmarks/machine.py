"""What a benchmark ran on, saved beside its figures (they only compare on the same machine)."""

import os
import platform


def describe() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus_available": len(os.sched_getaffinity(0)), "python": platform.python_version()}
