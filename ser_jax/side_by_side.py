"""Independent jobs side by side, each in a spawned process of its own with its output in a log file.

On a CPU host one training run leaves the cores partly idle (XLA:CPU runs the small ops of these
models one after another: on 2 vCPUs a run keeps about 1.7 of them busy), so two independent runs
side by side finish sooner than one after the other. Spawned, not forked: a fork would copy the
parent's JAX runtime with none of its threads.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from multiprocessing import connection

_TAIL_LINES = 12  # Of a failed job's log, in the error that reports it.


def _logged(fn: Callable, args: tuple, log: str) -> None:
    """A job's process: everything it prints (Python's and the C++ libraries' alike) goes to its log."""
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    with open(log, "a") as f:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    fn(*args)


def log_tail(log: str, lines: int = _TAIL_LINES) -> list[str]:
    """The last lines of a log, each progress-bar redraw (carriage returns) read as the line it leaves."""
    with open(log, errors="replace", newline="") as f:  # Keep the carriage returns.
        text = [line.rsplit("\r", 1)[-1].rstrip() for line in f.read().split("\n")]
    return [line for line in text if line][-lines:]


def run(fn: Callable, jobs: Sequence[tuple], logs: Sequence[str], *, processes: int,
        on_done: Callable[[int], None] | None = None) -> None:
    """Calls `fn(*jobs[i])` for every i, at most `processes` at a time, each in a spawned process that
    appends its output to `logs[i]`; `on_done(i)` as each finishes. `fn` and the jobs must pickle.

    Raises RuntimeError naming the log and quoting its last lines as soon as a job fails, after
    stopping the others (their last checkpoints stay, for a run that resumes)."""
    if len(jobs) != len(logs):
        raise ValueError(f"{len(jobs)} jobs but {len(logs)} logs")
    context = multiprocessing.get_context("spawn")
    waiting, running = list(range(len(jobs))), {}
    try:
        while waiting or running:
            while waiting and len(running) < max(processes, 1):
                i = waiting.pop(0)
                # Not a daemon: a job may start processes of its own (data_prep's feature workers).
                running[i] = context.Process(target=_logged, args=(fn, tuple(jobs[i]), logs[i]))
                running[i].start()
            connection.wait([p.sentinel for p in running.values()])
            for i, process in list(running.items()):
                if process.exitcode is None:
                    continue
                del running[i]
                if process.exitcode != 0:
                    lines = log_tail(logs[i]) if os.path.exists(logs[i]) else ["(it died before writing its log)"]
                    tail = "\n".join("    " + line for line in lines)
                    raise RuntimeError(f"{logs[i]}: the job failed (exit code {process.exitcode}); its last lines:\n"
                                       f"{tail}")
                if on_done:
                    on_done(i)
    finally:
        for process in running.values():
            process.terminate()
            process.join()
