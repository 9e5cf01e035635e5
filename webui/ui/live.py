"""Live preview for a generating tab: the job runs on a worker thread under a task id of its own, and the handler
(a generator) yields the task's newest preview (the family's cheap latent → RGB, engine/tasks.py) while it waits,
then returns the job's result. Only this job's previews are shown, whoever else is queued."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import torch
from PIL import Image

from ..engine.manager import JobOptions, PipelineManager

POLL_SECONDS = 0.5  # A1111's live_preview_refresh_period is 1000 ms


def preview_image(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """(3, h, w) in [-1, 1] → a picture of the job's size (one latent cell → an 8×8 block)."""
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels).resize(size, resample=Image.Resampling.NEAREST)


def run_with_previews(job: Callable[[JobOptions], object], manager: PipelineManager, size: tuple[int, int],
                      outputs: Callable[[Image.Image], tuple]) -> Iterator:
    """`yield from` it in a gradio generator handler: yields outputs(preview) whenever the job has a new
    preview, and returns the job's result (its exception is raised here)."""
    options = JobOptions(task_id=f"ui-{uuid.uuid4().hex[:12]}")
    done: dict = {}

    def work():
        try:
            done["result"] = job(options)
        except BaseException as e:  # noqa: BLE001 - handed to the handler's thread
            done["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    shown = 0
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        task, _ = manager.queue.find(options.task_id)
        if task is not None and task.status == "running" and task.preview is not None and task.preview_id != shown:
            shown = task.preview_id
            yield outputs(preview_image(task.preview, size))
    if "error" in done:
        raise done["error"]
    return done["result"]
