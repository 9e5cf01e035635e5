"""bf16 against fp32 on the built-in demo model: the quality gate for the CPU fast path (issue 19).

    python bench/precision.py [--prompts 40] [--seeds 2] [--ckpt PATH]

Generates the same held-out prompts and seeds (webui/demo/shapes.py; default sampler, 20 steps, CFG 7, the
model's native 64×64) three ways in one run: fp32 (the reference), bf16 UNet and text encoder with the VAE in
fp32, and everything in bf16. For each bf16 mode it prints the mean |Δ| per picture against fp32 in 8-bit grey
levels (mean over pictures, and the worst picture), the share of pictures within the gate (mean |Δ| ≤ 2/255),
and the demo judge's "all four" rate next to fp32's (the score must not move beyond noise), plus seconds per
picture. On a CPU without native bf16 (no avx512_bf16 / AMX) bf16 is emulated and slow: the timing column
then says nothing about the fast path, the differences still do.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from webui.demo import judge, shapes  # noqa: E402
from webui.engine.manager import PipelineManager  # noqa: E402
from webui.engine.models.precision import native_bf16  # noqa: E402
from webui.engine.params import GenerationParams  # noqa: E402

CKPT = ROOT / "models" / "Stable-diffusion" / "gouache-demo.safetensors"
MODES = {"fp32": (torch.float32, torch.float32), "bf16, VAE fp32": (torch.bfloat16, torch.float32),
         "bf16": (torch.bfloat16, torch.bfloat16)}
GATE = 2.0  # grey levels of mean |Δ| per picture


def run(ckpt: Path, dtype, vae_dtype, prompts, seeds: int):
    manager = PipelineManager(ckpt.parent, ckpt.parent, device="cpu", dtype=dtype, vae_dtype=vae_dtype)
    pictures, start = [], None
    for n, (prompt, _) in enumerate(prompts):
        if n == 1:
            start = time.perf_counter()  # the first job loads the model
        params = GenerationParams(prompt=prompt, steps=20, cfg_scale=7.0, seed=1000, width=shapes.SIZE,
                                  height=shapes.SIZE, batch_size=seeds)
        pictures += manager.txt2img(params, None).images
    seconds = (time.perf_counter() - start) / max(1, (len(prompts) - 1) * seeds)
    return pictures, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=CKPT)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prompts = shapes.held_out_prompts(args.prompts)
    scenes = [scene for _, scene in prompts for _ in range(args.seeds)]
    print(f"{args.ckpt.name}: {len(prompts)} prompts × {args.seeds} seeds, 20 steps, CFG 7, {shapes.SIZE}² px; "
          f"native bf16 on this CPU: {native_bf16()} ({torch.backends.cpu.get_cpu_capability()})")
    results = {name: run(args.ckpt, *dtypes, prompts, args.seeds) for name, dtypes in MODES.items()}
    reference = [np.asarray(p, dtype=np.float32) for p in results["fp32"][0]]
    print(f"{'mode':<16}{'mean |Δ|':>10}{'worst':>8}{'≤ 2/255':>9}{'all four':>10}{'s/picture':>11}")
    for name, (pictures, seconds) in results.items():
        diffs = [float(np.abs(np.asarray(p, dtype=np.float32) - r).mean()) for p, r in zip(pictures, reference)]
        verdicts = [judge.judge(p, s) for p, s in zip(pictures, scenes)]
        within = sum(d <= GATE for d in diffs) / len(diffs)
        allfour = sum(v.all for v in verdicts) / len(verdicts)
        print(f"{name:<16}{np.mean(diffs):>10.2f}{max(diffs):>8.2f}{within:>9.0%}{allfour:>10.1%}{seconds:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
