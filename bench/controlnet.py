"""Per-step cost of one ControlNet unit against none, through the engine's CFG denoiser and residual patch.

    python bench/controlnet.py [--size tiny|sd15|both] [--latent 32] [--repeats 5]

"tiny" is the test suite's tiny SD1 UNet; "sd15" a full-size SD1.5 UNet with random weights (built from the
bundled config, fp32 on the CPU; ~12 s per step at 64×64 latents here, so --latent defaults to 32). The baseline
(the same UNet with no unit) is measured in the same run; the ratio should be about 1 + the ControlNet's share of
the FLOPs (the encoder half of the UNet plus the hint encoder): ≤ 1.55 at SD1.5 size is the target.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from webui.engine.control import residuals  # noqa: E402
from webui.engine.control.units import ControlUnit  # noqa: E402
from webui.engine.patches import ControlCall  # noqa: E402


def unet_for(size: str):
    from diffusers import UNet2DConditionModel

    from webui.engine.models.families import CONFIGS_DIR
    from webui.engine.models.families.sd1 import TINY_UNET

    config = UNet2DConditionModel.load_config(CONFIGS_DIR / "sd1" / "unet")
    if size == "tiny":
        up = [t.replace("Down", "Up") for t in reversed(TINY_UNET["down_block_types"])]
        config = {**config, **TINY_UNET, "up_block_types": up}
    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(config).eval()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure(size: str, latent: int, repeats: int) -> tuple[float, float]:
    from diffusers import ControlNetModel

    unet = unet_for(size)
    controlnet = ControlNetModel.from_unet(unet).eval()
    hint = Image.new("RGB", (latent * 8, latent * 8), (255, 255, 255))
    unit = ControlUnit(model="bench", image=hint).checked()
    prepared = residuals.PreparedUnit(unit, controlnet, "bench", hint)
    patch = residuals.residual_patch([prepared], latent * 8, latent * 8)
    x = torch.randn(2, 4, latent, latent)  # the prompt and the negative prompt, as every CFG step
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, unet.config.cross_attention_dim)

    def plain():
        unet(x, t, encoder_hidden_states=context, return_dict=False)

    def controlled():
        down, mid, _ = patch(ControlCall(x, t, context, None, parts=1, images=1, step=0, total_steps=1))
        unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=tuple(down),
             mid_block_additional_residual=mid, return_dict=False)

    return timed(plain, repeats), timed(controlled, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "sd15", "both"], default="both")
    parser.add_argument("--latent", type=int, default=32, help="latent side (pixels / 8)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for size in (["tiny", "sd15"] if args.size == "both" else [args.size]):
        base, with_unit = measure(size, args.latent, args.repeats)
        print(f"{size:5s} latent {args.latent}²: UNet step {base * 1000:8.1f} ms, with one ControlNet unit "
              f"{with_unit * 1000:8.1f} ms, ratio {with_unit / base:.2f} (target ≤ 1.55 at SD1.5 size)")


if __name__ == "__main__":
    main()
