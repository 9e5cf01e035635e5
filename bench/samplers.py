"""Per-step cost of every sampler on the tiny model against the bare UNet forward measured in the same run.

    python bench/samplers.py [--steps 20] [--size 64] [--repeats 3]

The ratio "per call / UNet" is the sampler's overhead: 1.00 means the sampler adds nothing to the model
evaluation it has to do (CFG batch of 2, conditioning prepared once)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from webui.engine import models as architecture  # noqa: E402
from webui.engine.models import checkpoints  # noqa: E402
from webui.engine.jobs.resolve import resolve  # noqa: E402
from webui.engine.jobs.start import FromNoise  # noqa: E402
from webui.engine.params import GenerationParams  # noqa: E402
from webui.engine.prompts.conditioning import build_conditioning  # noqa: E402
from webui.engine.prompts.encoder import PromptEncoder  # noqa: E402
from webui.engine.rng import ImageRNG  # noqa: E402
from webui.engine.samplers import SAMPLERS, sampling  # noqa: E402
from webui.engine.samplers.denoiser import CFGDenoiser, DiscreteEpsDenoiser, alphas_cumprod  # noqa: E402
from webui.engine.settings import Settings  # noqa: E402
from webui.engine.models.tiny import make_tiny_checkpoint  # noqa: E402


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
        state_dict = checkpoints.read_state_dict(path)
    arch = architecture.detect(state_dict)
    comp = architecture.build_components(state_dict, arch)
    denoiser = DiscreteEpsDenoiser(comp.unet, alphas_cumprod(arch.scheduler_config))
    conditioning, _ = build_conditioning(PromptEncoder(comp.tokenizer, comp.text_encoder), "a cat", "", args.steps)
    cond, uncond = conditioning.parts[0][0][0][1], conditioning.uncond[0][1]
    shape = (4, args.size // 8, args.size // 8)

    x2 = torch.randn(2, *shape)
    t2 = torch.tensor([500.0, 500.0])
    c2 = torch.cat([cond, uncond])
    with torch.no_grad():
        comp.unet(x2, t2, encoder_hidden_states=c2)  # warm-up
        unet_s = best_of(args.repeats * 5, lambda: comp.unet(x2, t2, encoder_hidden_states=c2))

    print(f"tiny SD1 model, {args.size}x{args.size}, {args.steps} steps, CFG batch 2, best of {args.repeats}; "
          f"bare UNet forward: {unet_s * 1000:.2f} ms")
    print(f"{'sampler':<18} {'calls':>5} {'ms/step':>8} {'ms/call':>8} {'per call / UNet':>16}")
    for info in SAMPLERS:
        params = resolve(GenerationParams(sampler_name=info.name, steps=args.steps), Settings())
        plan = sampling.make_plan(params, Settings(), denoiser, args.steps)
        calls = 0

        def count():
            nonlocal calls
            calls += 1

        def one_run():
            nonlocal calls
            calls = 0
            model = CFGDenoiser(plan.denoiser, conditioning, 7.0, on_step=count)
            rng = ImageRNG(shape, [1])
            with torch.no_grad():
                start, _ = FromNoise(args.steps).begin(plan, rng, [1], "cpu")
                sampling.run(plan, model, start, rng, [1], "cpu")

        one_run()  # warm-up
        seconds = best_of(args.repeats, one_run)
        per_call = seconds / max(calls, 1)
        print(f"{info.name:<18} {calls:>5} {seconds / args.steps * 1000:>8.2f} {per_call * 1000:>8.2f} "
              f"{per_call / unet_s:>16.2f}")


if __name__ == "__main__":
    main()
