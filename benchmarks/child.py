"""Benchmarks run each setting in a fresh process (XLA reads its flags at start-up; start-up is part
of some figures): `run` starts this script again with arguments, `reply` answers from the child."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Runs `python script *args` on the CPU backend with the repository importable; returns its reply."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    proc = subprocess.run([sys.executable, os.path.abspath(script), *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark child {os.path.basename(script)} {' '.join(args)} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reply(figures: dict) -> None:
    """The child's answer: one JSON line, the last thing it prints."""
    print(json.dumps(figures))
