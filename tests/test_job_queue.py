"""The one job queue (engine/tasks.py): first come first served, bounded, one running task at a time."""
import threading
import time

import pytest
import torch

from webui.engine.errors import UserError
from webui.engine.tasks import JobQueue, QueueFull, TaskState


def _hold(queue, task_id, release: threading.Event, log: list):
    def run():
        with queue.task(task_id) as state:
            log.append(("start", state.id))
            release.wait(10)
            log.append(("end", state.id))
    thread = threading.Thread(target=run)
    thread.start()
    while queue.find(task_id)[0] is None:
        time.sleep(0.001)
    return thread


def test_jobs_run_one_at_a_time_in_arrival_order():
    queue, log, release = JobQueue(), [], threading.Event()
    threads = [_hold(queue, f"t{i}", release, log) for i in range(5)]
    assert [t.id for t in queue.pending()] == ["t1", "t2", "t3", "t4"]
    assert queue.current.id == "t0" and queue.find("t3")[1] == 2
    release.set()
    for thread in threads:
        thread.join(10)
    assert log == [(kind, f"t{i}") for i in range(5) for kind in ("start", "end")]
    assert len(queue) == 0 and queue.find("t2")[0].status == "done"


def test_a_full_queue_refuses_at_once_and_recovers():
    limit = {"n": 2}
    queue, log, release = JobQueue(lambda: limit["n"]), [], threading.Event()
    threads = [_hold(queue, f"t{i}", release, log) for i in range(2)]
    with pytest.raises(QueueFull, match=r"the job queue is full \(2 jobs") as refused:
        with queue.task("t9"):
            pass
    assert refused.value.retry_after >= 1
    limit["n"] = 3  # the setting is read per job
    threads.append(_hold(queue, "t2", release, log))
    release.set()
    for thread in threads:
        thread.join(10)
    with queue.task("again") as state:
        assert state.status == "running"


def test_a_task_id_in_use_is_refused():
    queue, log, release = JobQueue(), [], threading.Event()
    thread = _hold(queue, "same", release, log)
    with pytest.raises(UserError, match="task id 'same' is already queued or running"):
        with queue.task("same"):
            pass
    release.set()
    thread.join(10)


def test_an_error_in_a_job_frees_its_turn():
    queue = JobQueue()
    with pytest.raises(RuntimeError):
        with queue.task("bad"):
            raise RuntimeError("boom")
    with queue.task("next") as state:
        assert queue.current is state


def test_progress_and_eta_follow_a1111s_formula():
    state = TaskState("t", started_at=time.time() - 2)
    state.job_count, state.job_no, state.sampling_step, state.sampling_steps = 4, 1, 5, 10
    assert state.progress() == pytest.approx(0.01 + 1.5 / 4)
    assert state.eta() == pytest.approx(2 / state.progress() - 2, rel=0.05)
    state.set_preview(torch.zeros(3, 8, 8))
    assert state.preview_id == 1 and state.preview.device.type == "cpu"
    assert TaskState("q").progress() == 0 and TaskState("q").status == "queued"


def test_interrupt_and_skip_reach_only_the_running_task():
    queue, log, release = JobQueue(), [], threading.Event()
    threads = [_hold(queue, f"t{i}", release, log) for i in range(2)]
    queue.interrupt()
    queue.skip()
    running, waiting = queue.find("t0")[0], queue.find("t1")[0]
    assert running.interrupted and running.skipped and not waiting.interrupted and not waiting.skipped
    release.set()
    for thread in threads:
        thread.join(10)
