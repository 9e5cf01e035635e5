"""What two of the extension's preprocessors do to the sampling itself, on each guided prediction of x0:

- tile_colorfix: the prediction keeps its own detail but takes its low frequencies (a box blur of radius
  "Variation", threshold A, in latent pixels) from the control picture's latent, so a tile upscale keeps the
  picture's colours. The blur is linear and CFG's weights sum to one, so doing it after CFG is the same as
  the extension doing it on every branch.
- inpaint_only: outside the unit's mask the prediction is the control picture's latent, so only the masked part
  is drawn anew (the extension's latent blending; the ControlNet sees the masked pixels as −1).

Registered as after-CFG hooks on the job (engine/patches.py)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..patches import CFGStep, JobPatches

FIXES = ("tile_colorfix", "inpaint_only")


def blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """A (2k+1)² box blur with the edge pixels repeated outward."""
    return F.avg_pool2d(F.pad(x, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)


def register(patches: JobPatches, prepared: list, width: int, height: int) -> None:
    from ..jobs.img2img import encode_picture

    fixes = [item for item in prepared if item.unit.module in FIXES]
    if not fixes:
        return
    model = {}
    patches.on_model(lambda components: model.update(vae=components.vae))
    latents: dict = {}

    def latent(index: int, w: int, h: int) -> torch.Tensor:
        if (index, w, h) not in latents:
            hint = fixes[index].hint
            picture = hint if hint.size == (w, h) else hint.resize((w, h), Image.Resampling.LANCZOS)
            with torch.no_grad():
                latents[index, w, h] = encode_picture(model["vae"], picture)
        return latents[index, w, h]

    def keep_mask(index: int, h: int, w: int) -> torch.Tensor:
        """1 where the picture is kept (outside the mask), at latent size."""
        mask = fixes[index].mask.convert("L").resize((w, h), Image.Resampling.BILINEAR)
        return torch.from_numpy(1.0 - np.asarray(mask, dtype=np.float32) / 255.0)[None, None]

    def after_cfg(step: CFGStep):
        x = step.x
        lh, lw = x.shape[-2:]
        hires = (lw * 8, lh * 8) != (width, height)
        fraction = step.step / max(step.total_steps, 1)
        for index, item in enumerate(fixes):
            unit = item.unit
            if unit.hr_option == "Low res only" and hires or unit.hr_option == "High res only" and not hires:
                continue
            ref = latent(index, lw * 8, lh * 8).to(x.device, x.dtype)
            if unit.module == "tile_colorfix":
                if unit.weight == 0 or not unit.active_at(fraction):
                    continue
                k = max(int(unit.threshold_a if unit.threshold_a >= 0 else 8), 1)
                x = x - blur(x, k) + blur(ref, k)
            else:
                keep = keep_mask(index, lh, lw).to(x.device, x.dtype)
                x = ref * keep + x * (1 - keep)
        step.x = x

    patches.after_cfg.append(after_cfg)
