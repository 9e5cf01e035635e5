"""The one typed request that the UI, the CLI, the API and the infotext codec share."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import UserError

# A1111's UI limits (modules/ui.py); the same bounds guard the CLI and the API.
SIZE_MIN, SIZE_MAX, SIZE_STEP = 64, 2048, 8
STEPS_MAX = 150
CFG_MAX = 30.0
BATCH_SIZE_MAX = 8
BATCH_COUNT_MAX = 100
SEED_MAX = 2**32 - 1
MASK_BLUR_MAX = 64
PADDING_MAX = 256
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # inpainting_fill index → name


class InvalidParams(UserError, ValueError):
    """A request field is out of range; the message names the field and the allowed range."""


@dataclass
class GenerationParams:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"  # A1111's UI default
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    seed: int = -1  # -1 = random
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1  # "Batch count"
    # Variation seed ("subseed"), A1111 semantics: noise = slerp(strength, noise(seed), noise(subseed)).
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0  # 0 = off
    seed_resize_from_h: int = 0
    # Sampler knobs; None = the current setting (engine/settings.py). Infotext carries the values used.
    eta: float | None = None  # "Eta": ancestral and SDE samplers
    eta_ddim: float | None = None  # "Eta DDIM"
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    ensd: int | None = None  # "Eta noise seed delta"
    rng: str | None = None  # "CPU" or "GPU"
    sigma_min: float | None = None  # "Schedule min sigma"
    sigma_max: float | None = None
    rho: float | None = None
    clip_skip: int | None = None  # 1–12; "Clip skip"
    emphasis: str | None = None  # "Original", "No norm", "Ignore", "None"
    # The checkpoint: a name, title, hash or path to load; on written infotext, the loaded model's name.
    model: str | None = None
    model_hash: str | None = None
    vae: str | None = None  # None = the setting; infotext "VAE" (an external VAE's file name)
    vae_hash: str | None = None
    # img2img / inpainting (None = not used: not written to infotext). A1111 UI defaults in comments.
    denoising_strength: float | None = None  # 0.75
    resize_mode: int = 0  # 0 Just resize, 1 Crop and resize, 2 Resize and fill, 3 Just resize (latent upscale)
    mask_blur: int | None = None  # 4
    inpainting_mask_invert: bool = False  # "Mask mode": Inpaint masked / Inpaint not masked
    inpainting_fill: int | None = None  # "Masked content": 0 fill, 1 original (default), 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = False  # "Inpaint area": Whole picture / Only masked
    inpaint_full_res_padding: int | None = None  # "Only masked padding, pixels": 32
    inpainting_mask_weight: float | None = None  # "Conditional mask weight" (inpainting models); the setting's
    initial_noise_multiplier: float | None = None  # "Noise multiplier"; the setting's
    # Infotext fields this version does not model, verbatim and in order (e.g. "Hires upscale", "Version").
    extra: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes) -> GenerationParams:
        changes.setdefault("extra", dict(self.extra))
        return dataclasses.replace(self, **changes)

    def validate(self) -> GenerationParams:
        """Raise InvalidParams with a message a user can act on; return self for chaining."""
        def check_range(name, value, lo, hi):
            if not lo <= value <= hi:
                raise InvalidParams(f"{name} must be between {lo} and {hi}, got {value}")

        check_range("steps", self.steps, 1, STEPS_MAX)
        check_range("CFG scale", self.cfg_scale, 0.0, CFG_MAX)
        check_range("batch size", self.batch_size, 1, BATCH_SIZE_MAX)
        check_range("batch count", self.n_iter, 1, BATCH_COUNT_MAX)
        for name, value in (("width", self.width), ("height", self.height)):
            check_range(name, value, SIZE_MIN, SIZE_MAX)
            if value % SIZE_STEP:
                raise InvalidParams(f"{name} must be a multiple of {SIZE_STEP}, got {value}")
        if self.seed != -1:
            check_range("seed", self.seed, 0, SEED_MAX)
        if self.subseed != -1:
            check_range("variation seed", self.subseed, 0, SEED_MAX)
        check_range("variation strength", self.subseed_strength, 0.0, 1.0)
        for name, value in (("resize seed from width", self.seed_resize_from_w),
                            ("resize seed from height", self.seed_resize_from_h)):
            check_range(name, value, 0, SIZE_MAX)
        if self.clip_skip is not None:
            check_range("clip skip", self.clip_skip, 1, 12)
        if self.emphasis is not None and self.emphasis not in ("Original", "No norm", "Ignore", "None"):
            raise InvalidParams(f"emphasis must be one of Original, No norm, Ignore, None; got {self.emphasis!r}")
        if self.denoising_strength is not None:
            check_range("denoising strength", self.denoising_strength, 0.0, 1.0)
        check_range("resize mode", self.resize_mode, 0, 3)
        if self.mask_blur is not None:
            check_range("mask blur", self.mask_blur, 0, MASK_BLUR_MAX)
        if self.inpainting_fill is not None:
            check_range("masked content", self.inpainting_fill, 0, 3)
        if self.inpaint_full_res_padding is not None:
            check_range("only masked padding", self.inpaint_full_res_padding, 0, PADDING_MAX)
        if self.inpainting_mask_weight is not None:
            check_range("conditional mask weight", self.inpainting_mask_weight, 0.0, 1.0)
        if self.initial_noise_multiplier is not None:
            check_range("noise multiplier", self.initial_noise_multiplier, 0.0, 1.5)
        if self.rng is not None and self.rng not in ("CPU", "GPU"):
            raise InvalidParams(f"RNG source must be CPU or GPU, got {self.rng!r}")
        return self
