"""Token merging (tomesd, A1111's "Token merging ratio"): UNet step time and how far the output moves, per ratio.

    .venv/bin/python bench/token_merging.py [--sizes 256 512] [--ratios 0.3 0.5] [--scratch DIR]

On the full-width random SD1.5 checkpoint bench/compare.py writes (the same scratch folder), in fp32 on the CPU:
for each picture size, the CFG batch of 2 through the UNet with merging off (the baseline, same run) and at
each ratio: best of 3 forwards, the speedup, and the mean |Δ| of ε relative to its mean |ε|. Merging only acts
at the full latent resolution (tomesd's max_downsample 1, as A1111), so the gain grows with the picture.
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
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--scratch", type=Path, default=ROOT / "cache" / "bench-compare")
    args = parser.parse_args(argv)

    import torch

    import compare
    import sdxl_comfy
    from webui.engine.manager import PipelineManager
    from webui.engine.models import token_merging

    ckpt = args.scratch / "models" / compare.CKPT["sd1"]
    if not ckpt.exists():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        sdxl_comfy.write_checkpoint(ckpt, family="sd1")
    unet = PipelineManager(ckpt.parent, ckpt.parent / "data", device="cpu").load(ckpt.name).components.unet
    g = torch.Generator().manual_seed(0)
    print(f"SD1.5 full width, fp32, CPU, {torch.get_num_threads()} threads; UNet forward of the CFG batch of 2")
    print(f"{'size':<8}{'ratio':>6}{'seconds':>9}{'speedup':>9}{'mean |Δε| / mean |ε|':>22}")
    for size in args.sizes:
        x = torch.randn(2, 4, size // 8, size // 8, generator=g)
        context = torch.randn(2, 77, 768, generator=g)
        t = torch.full((2,), 500.0)
        results = {}
        with torch.no_grad():
            for ratio in [0.0, *args.ratios]:
                with token_merging.merged(unet, ratio):
                    unet(x, t, context)
                    times = []
                    for _ in range(3):
                        start = time.perf_counter()
                        eps = unet(x, t, context).sample
                        times.append(time.perf_counter() - start)
                results[ratio] = (min(times), eps)
        base, reference = results[0.0]
        for ratio, (seconds, eps) in results.items():
            moved = float((eps - reference).abs().mean() / reference.abs().mean())
            print(f"{size:<8}{ratio:>6.1f}{seconds:>9.3f}{base / seconds:>8.2f}×{moved:>22.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
