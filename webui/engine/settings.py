"""User settings (A1111's option names), the defaults every request falls back to.

A request field left at None takes the value here; infotext records the values actually used, so a pasted
infotext regenerates the same picture whatever the settings are."""
from __future__ import annotations

from dataclasses import dataclass

RNG_SOURCES = ("CPU", "GPU")


@dataclass
class Settings:
    sd_checkpoints_limit: int = 1  # checkpoints kept in RAM
    lora_in_memory_limit: int = 4  # LoRA files kept parsed in RAM per loaded model (A1111's default is 0)
    sd_vae: str = "Automatic"  # "Automatic", "None" or a file in models/VAE
    cross_attention_optimization: str = "Automatic"
    CLIP_stop_at_last_layers: int = 1  # "Clip skip"
    emphasis: str = "Original"
    eta_ancestral: float = 1.0  # "Eta" for ancestral / SDE samplers
    eta_ddim: float = 0.0  # "Eta DDIM"
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0 = infinity, as A1111
    s_noise: float = 1.0
    eta_noise_seed_delta: int = 0  # "ENSD"
    # CPU noise is the same on every machine; "GPU" reproduces A1111's default on CUDA machines.
    randn_source: str = "CPU"
    sigma_min: float = 0.0  # 0 = the model's
    sigma_max: float = 0.0
    rho: float = 0.0  # 0 = the schedule's default
    always_discard_next_to_last_sigma: bool = False
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    # img2img
    img2img_fix_steps: bool = False  # "do exactly the amount of steps the slider specifies"
    initial_noise_multiplier: float = 1.0
    inpainting_mask_weight: float = 1.0  # "Inpainting conditioning mask strength"
    img2img_background_color: str = "#ffffff"  # transparent init images are flattened onto it
