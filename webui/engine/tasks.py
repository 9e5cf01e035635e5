"""The one job queue: every job from the UI, the HTTP API, the CLI and scripts waits its turn here, in the order it
arrived, and reports its progress on its task.

A job enters with `JobQueue.task(...)` (a context manager): it gets a TaskState, waits until every task that
arrived before it has left, runs, and leaves. The queue is bounded (a full queue refuses with QueueFull, which the
API turns into 503 + Retry-After) so a flood of requests cannot pile up unbounded threads and memory. Interrupt and
Skip act on the running task only; the UI's Interrupt and the API's `/interrupt` are the same call."""
from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .errors import UserError

FINISHED_KEPT = 256  # finished tasks remembered for a late progress poll


class QueueFull(UserError):
    """The queue holds its limit of jobs; the client should retry later."""

    def __init__(self, limit: int, retry_after: int):
        super().__init__(f"the job queue is full ({limit} jobs waiting or running; setting queue_limit); "
                         f"retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class TaskState:
    """What `GET /sdapi/v1/progress` and the UI's progress bar read about one job. The job writes it from its
    own thread; readers only read (a torn read costs one stale number, never an error)."""
    id: str
    job: str = ""  # "txt2img", "img2img", …
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    job_count: int = 0  # batches (A1111's job_count = batch count)
    job_no: int = 0  # the batch being sampled, from 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False  # cleared when the next batch starts
    textinfo: str = ""
    # the newest predicted picture (the first image of the batch) as RGB in [-1, 1], (3, h, w) on the CPU, and
    # a counter that moves when it changes (A1111's id_live_preview)
    preview: torch.Tensor | None = None
    preview_id: int = 0

    @property
    def status(self) -> str:
        if self.finished_at is not None:
            return "done"
        return "running" if self.started_at is not None else "queued"

    def progress(self) -> float:
        """A1111's fraction: finished batches plus the running batch's steps, over the batches."""
        if self.finished_at is not None:
            return 1.0
        if self.started_at is None or self.job_count <= 0:
            return 0.0
        within = self.sampling_step / self.sampling_steps if self.sampling_steps else 0.0
        return min(1.0, 0.01 + (self.job_no + within) / self.job_count)

    def eta(self) -> float:
        """Seconds left, extrapolated from the time the job has run (0 before it has made progress)."""
        done = self.progress()
        if self.started_at is None or done <= 0.01 or self.finished_at is not None:
            return 0.0
        elapsed = time.time() - self.started_at
        return max(0.0, elapsed / done - elapsed)

    def set_preview(self, rgb: torch.Tensor) -> None:
        self.preview = rgb.detach().to("cpu", torch.float32)
        self.preview_id += 1


class JobQueue:
    """FIFO admission with a bound. `limit()` is asked per job, so the setting may change at run time."""

    def __init__(self, limit: Callable[[], int] = lambda: 64):
        self._limit = limit
        self._cond = threading.Condition()
        self._line: deque[TaskState] = deque()  # the running task first, then the waiting ones in order
        self._finished: OrderedDict[str, TaskState] = OrderedDict()
        self._ids = itertools.count(1)
        self._seconds_per_job = 1.0  # for Retry-After: a running mean of job durations

    @contextmanager
    def task(self, task_id: str | None = None, job: str = "") -> Iterator[TaskState]:
        """Wait for this job's turn; yield its TaskState while it runs. Raises QueueFull without waiting when the
        line is at its limit. A task id that is already in the line is refused (ids must stay unique)."""
        state = TaskState(id=task_id or f"task({uuid.uuid4().hex[:15]})", job=job)
        with self._cond:
            limit = max(1, int(self._limit()))
            if len(self._line) >= limit:
                raise QueueFull(limit, max(1, round(self._seconds_per_job * len(self._line))))
            if any(t.id == state.id for t in self._line):
                raise UserError(f"task id {state.id!r} is already queued or running")
            self._line.append(state)
            try:
                while self._line[0] is not state:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting (a client gone): leave the line
                self._line.remove(state)
                self._cond.notify_all()
                raise
            state.started_at = time.time()
        try:
            yield state
        finally:
            with self._cond:
                state.finished_at = time.time()
                self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (state.finished_at - state.started_at)
                self._line.popleft()
                self._finished[state.id] = state
                while len(self._finished) > FINISHED_KEPT:
                    self._finished.popitem(last=False)
                self._cond.notify_all()

    @property
    def current(self) -> TaskState | None:
        with self._cond:
            return self._line[0] if self._line else None

    def pending(self) -> list[TaskState]:
        """The waiting tasks, first in line first (not the running one)."""
        with self._cond:
            return list(self._line)[1:]

    def __len__(self) -> int:
        with self._cond:
            return len(self._line)

    def find(self, task_id: str) -> tuple[TaskState | None, int | None]:
        """(the task, its place among the waiting ones: 0 = next; None when it runs or has finished)."""
        with self._cond:
            for place, state in enumerate(self._line):
                if state.id == task_id:
                    return state, (None if place == 0 else place - 1)
            return self._finished.get(task_id), None

    def interrupt(self) -> None:
        current = self.current
        if current is not None:
            current.interrupted = True

    def skip(self) -> None:
        current = self.current
        if current is not None:
            current.skipped = True
