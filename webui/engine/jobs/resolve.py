"""A job's request with every "None = the setting" field filled from one snapshot of the settings, taken once
under the manager's lock: samplers, prompt encoding and img2img read only this, and the infotext is written
from it, so a settings change while a job runs cannot reach that job."""
from __future__ import annotations

from ..params import GenerationParams
from ..settings import Settings

# request field → the setting it falls back to (A1111's option names)
FALLBACKS = {
    "eta": "eta_ancestral", "eta_ddim": "eta_ddim", "s_churn": "s_churn", "s_tmin": "s_tmin", "s_tmax": "s_tmax",
    "s_noise": "s_noise", "ensd": "eta_noise_seed_delta", "rng": "randn_source", "sigma_min": "sigma_min",
    "sigma_max": "sigma_max", "rho": "rho", "clip_skip": "CLIP_stop_at_last_layers", "emphasis": "emphasis",
    "initial_noise_multiplier": "initial_noise_multiplier", "inpainting_mask_weight": "inpainting_mask_weight",
    "token_merging_ratio": "token_merging_ratio",
}


# An empty emphasis or a clip skip of 0 also means "the setting" (older UI and API clients send those).
_FALSY_IS_UNSET = ("clip_skip", "emphasis")


def resolve(params: GenerationParams, settings: Settings, img2img: bool = False) -> GenerationParams:
    """`img2img`: the job starts from a picture (A1111 then merges tokens at its img2img ratio when not 0)."""
    if img2img and params.token_merging_ratio is None and settings.token_merging_ratio_img2img:
        params = params.replace(token_merging_ratio=settings.token_merging_ratio_img2img)
    def unset(name):
        value = getattr(params, name)
        return value is None or (name in _FALSY_IS_UNSET and not value)

    resolved = params.replace(**{name: getattr(settings, setting) for name, setting in FALLBACKS.items()
                                 if unset(name)})
    if resolved.token_merging_ratio_hr is None:  # A1111: the hires setting if not 0, else the first pass's ratio
        resolved = resolved.replace(token_merging_ratio_hr=settings.token_merging_ratio_hr
                                    or resolved.token_merging_ratio)
    return resolved
