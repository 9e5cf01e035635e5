"""What the HTTP API adds to a job: queue, HTTP, JSON, PNG + base64 encoding, on the tiny model.

    python bench/api.py [--requests 40] [--size 64] [--steps 1]

A tiny random SD1 checkpoint is written to a temp dir and served by the standalone API (--nowebui's app) in this
process. Per request, the overhead is the client's round trip minus the job's own time in the engine (from the
task's start to its end in the queue, which the server records). The baseline, measured in the same run, is the
same request through PipelineManager.txt2img directly. Target: overhead ≤ 15 ms at 64×64.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_MS = 15.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()

    import requests

    from api.conftest import start_api  # the tests' live server helper: the app --nowebui serves
    from webui.engine.manager import PipelineManager
    from webui.engine.models.tiny import make_tiny_checkpoint
    from webui.engine.params import GenerationParams

    data = Path(tempfile.mkdtemp(prefix="bench-api-"))
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    make_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", seed=0)
    manager = PipelineManager(data / "models" / "Stable-diffusion", data, device="cpu")
    body = {"prompt": "a red circle", "width": args.size, "height": args.size, "steps": args.steps,
            "sampler_name": "Euler", "seed": 1}
    direct_params = GenerationParams(prompt=body["prompt"], width=args.size, height=args.size, steps=args.steps,
                                     sampler_name="Euler", seed=1)

    def direct() -> float:
        start = time.perf_counter()
        manager.txt2img(direct_params, None)
        return time.perf_counter() - start

    with start_api(manager, data) as server, requests.Session() as session:
        url = f"{server.url}/sdapi/v1/txt2img"

        def through_api(i: int) -> tuple[float, float]:
            task_id = f"bench-{i}"
            start = time.perf_counter()
            reply = session.post(url, json={**body, "force_task_id": task_id}, timeout=120)
            total = time.perf_counter() - start
            reply.raise_for_status()
            task, _ = manager.queue.find(task_id)
            return total, task.finished_at - task.started_at

        for i in range(5):  # warm-up: model load, first PNG encode, connection
            direct()
            through_api(-1 - i)
        direct_times, api_times, overheads = [], [], []
        for i in range(args.requests):  # interleaved, so drift hits both sides alike
            direct_times.append(direct())
            total, engine = through_api(i)
            api_times.append(total)
            overheads.append(total - engine)

    ms = lambda seconds: seconds * 1000  # noqa: E731
    d, a, o = (statistics.median(x) for x in (direct_times, api_times, overheads))
    print(f"tiny SD1, {args.size}x{args.size}, {args.steps} step(s), Euler, {args.requests} requests, sequential")
    print(f"{'':28}{'median':>10}{'p90':>10}")
    p90 = lambda xs: sorted(xs)[int(0.9 * (len(xs) - 1))]  # noqa: E731
    print(f"{'manager.txt2img (baseline)':28}{ms(d):>8.1f}ms{ms(p90(direct_times)):>8.1f}ms")
    print(f"{'API round trip':28}{ms(a):>8.1f}ms{ms(p90(api_times)):>8.1f}ms")
    print(f"{'API overhead (trip - job)':28}{ms(o):>8.1f}ms{ms(p90(overheads)):>8.1f}ms")
    print(f"round trip / baseline: {a / d:.2f}x; overhead target <= {TARGET_MS:.0f} ms: "
          f"{'met' if ms(o) <= TARGET_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
