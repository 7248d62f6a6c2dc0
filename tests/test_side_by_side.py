"""Jobs side by side in spawned processes: every job runs, each log holds its own job's output, and a
failure is reported with its log and stops the rest."""

import multiprocessing

import pytest

from ser_jax import side_by_side


def test_every_job_runs_in_its_own_process_and_writes_to_its_own_log(tmp_path):
    logs = [str(tmp_path / f"job{i}.log") for i in range(3)]
    code = "import os, sys; print('job {}', os.getpid() != {}); print('to stderr', file=sys.stderr)"
    done = []
    side_by_side.run(exec, [(code.format(i, multiprocessing.current_process().pid),) for i in range(3)], logs,
                     processes=2, on_done=done.append)
    assert sorted(done) == [0, 1, 2]
    assert [sorted(open(log).read().splitlines()) for log in logs] == [
        [f"job {i} True", "to stderr"] for i in range(3)]


def test_a_failed_job_is_reported_with_its_log_and_the_others_are_stopped(tmp_path):
    logs = [str(tmp_path / "slow.log"), str(tmp_path / "failing.log")]
    jobs = [("import time; time.sleep(600)",), ("print('reading the corpus'); 1 / 0",)]
    with pytest.raises(RuntimeError, match=r"(?s)failing\.log: the job failed \(exit code 1\).*reading the corpus"
                                           r".*ZeroDivisionError"):
        side_by_side.run(exec, jobs, logs, processes=2)
    assert not multiprocessing.active_children()  # The ten-minute job was stopped, not waited for.
    with pytest.raises(ValueError, match="2 jobs but 1 logs"):
        side_by_side.run(exec, jobs, logs[:1], processes=2)


def test_a_log_tail_reads_progress_bar_redraws_as_the_line_they_leave(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("start\n 10%|#   | 1/10\r 50%|#####     | 5/10\r100%|##########| 10/10\n\nValidation UA 61%\n")
    assert side_by_side.log_tail(str(log)) == ["start", "100%|##########| 10/10", "Validation UA 61%"]
    assert side_by_side.log_tail(str(log), 1) == ["Validation UA 61%"]
