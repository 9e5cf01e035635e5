"""Architecture descriptions: the bundled per-family config skeletons plus the sizes a checkpoint determines.

Each family has a folder of diffusers config skeletons under configs/ (written by scripts/make_configs.py).
`make_architecture` overrides a skeleton with sizes (read from tensor shapes by arch_detect, or literal sizes
from tiny.py) and derives what follows from them, so detection and the tiny builder share one config path.
"""
from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .families import CONFIGS_DIR, ModelFamily, get_family

PREDICTION_TYPES = ("epsilon", "v_prediction")
# The text hidden state each family's UNet was trained on (ModelFamily.clip_skip / clip_final_norm):
#   SD1: the last layer, normalised (transformers' last_hidden_state).
#   SD2: the penultimate of OpenCLIP-H's 24 layers, normalised (ldm FrozenOpenCLIPEmbedder layer="penultimate";
#        A1111 ignores its CLIP-skip setting for SD2). We keep all 24 layers, so that is hidden_states[-2]
#        through final_layer_norm: exactly what transformers gives for diffusers' 23-layer conversion.
#   SDXL/refiner: the penultimate layer of each tower, NOT normalised (sgm: CLIP-L layer "hidden" idx 11,
#        OpenCLIP-bigG "penultimate" with legacy=False); the pooled embedding still uses all layers + norm.


class ArchitectureError(UserError, ValueError):
    """The state dict is not a supported Stable Diffusion checkpoint; the message says what is wrong."""


@dataclass(frozen=True)
class Architecture:
    name: str  # display string for the UI, e.g. "SD1", "SD2 (v)", "SDXL refiner", "SD1 inpainting"
    unet_config: dict
    vae_config: dict
    text_encoder_config: dict | None  # None where the family has no first tower (SDXL refiner)
    scheduler_config: dict  # betas for the sampler's alphas_cumprod, and prediction_type
    config_dir: Path  # skeleton folder (or a diffusers model folder); tokenizer/ and tokenizer_2/ load from it
    family: str = "sd1"  # a registered ModelFamily's key (families.get_family); `model_family` is the object
    prediction_type: str = "epsilon"  # "epsilon" | "v_prediction"
    inpainting: bool = False  # UNet takes latents + mask + masked-image latents (9 channels)
    text_encoder_2_config: dict | None = None  # SDXL's OpenCLIP-bigG (CLIPTextModelWithProjection)
    # Which text hidden state conditions the UNet: hidden_states[-clip_skip] (1 = the last layer), passed
    # through final_layer_norm when clip_final_norm. The family's unless a diffusers folder says otherwise.
    clip_skip: int = 1
    clip_final_norm: bool = True

    @property
    def tokenizer_dir(self) -> Path | None:
        return self.config_dir / "tokenizer" if self.text_encoder_config is not None else None

    @property
    def tokenizer_2_dir(self) -> Path | None:
        return self.config_dir / "tokenizer_2" if self.text_encoder_2_config is not None else None

    @property
    def model_family(self) -> ModelFamily:
        return get_family(self.family)

    @property
    def is_sdxl(self) -> bool:
        """SDXL's conditioning (size/crop ids beside a pooled text embedding), base or refiner."""
        return self.model_family.n_time_ids > 0

    @property
    def default_size(self) -> int:
        """The resolution (pixels per side) the model was trained at: 512, 768 (SD2 v), 1024 (SDXL)."""
        return self.unet_config["sample_size"] * 2 ** (len(self.vae_config["block_out_channels"]) - 1)


@functools.cache
def _read_skeleton(config_dir: Path) -> dict[str, dict | None]:
    def read(rel: str) -> dict | None:
        path = config_dir / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    return {
        "unet": read("unet/config.json"),
        "vae": read("vae/config.json"),
        "text_encoder": read("text_encoder/config.json"),
        "text_encoder_2": read("text_encoder_2/config.json"),
        "scheduler": read("scheduler/scheduler_config.json"),
    }


def _text_config(base: dict | None, sizes: Mapping | None) -> dict | None:
    if base is None:
        if sizes:
            raise ValueError("text encoder sizes given for a slot the family does not have")
        return None
    cfg = {**base, **(sizes or {})}
    if sizes and "hidden_size" in sizes and "num_attention_heads" not in sizes:
        cfg["num_attention_heads"] = max(1, cfg["hidden_size"] // 64)  # CLIP's head dim is 64 in every tower
    return cfg


def finish_architecture(family: str, unet_cfg: dict, vae_cfg: dict, text_cfg: dict | None, text_2_cfg: dict | None,
                        scheduler_cfg: dict, config_dir: Path, prediction_type: str,
                        clip_skip: int | None = None) -> Architecture:
    """The Architecture record from complete configs: name, variant and text-layer fields derived."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r} (known: {', '.join(PREDICTION_TYPES)})")
    latent = vae_cfg["latent_channels"]
    inpainting = unet_cfg["in_channels"] == 2 * latent + 1
    scheduler_cfg = {**scheduler_cfg, "prediction_type": prediction_type}
    model_family = get_family(family)
    return Architecture(
        name=model_family.display_name(prediction_type, inpainting), unet_config=unet_cfg, vae_config=vae_cfg,
        text_encoder_config=text_cfg, scheduler_config=scheduler_cfg, config_dir=config_dir, family=family,
        prediction_type=prediction_type, inpainting=inpainting, text_encoder_2_config=text_2_cfg,
        clip_skip=model_family.clip_skip if clip_skip is None else clip_skip,
        clip_final_norm=model_family.clip_final_norm)


def make_architecture(family: str = "sd1", *, unet: Mapping | None = None, vae: Mapping | None = None,
                      text_encoder: Mapping | None = None, text_encoder_2: Mapping | None = None,
                      prediction_type: str = "epsilon") -> Architecture:
    """The family's skeleton configs with size overrides (diffusers/transformers config names).

    The one place configs are built: `detect` passes sizes read from shapes, tiny.py passes literal sizes.
    Sizes that follow from others are derived here; the rest keeps the family's conventions: UNet heads
    (SD1: 8; SD2/SDXL: channels // 64, at least 1), CLIP heads = hidden // 64 (at least 1), GroupNorm groups 32,
    VAE scaling factor (0.18215; SDXL 0.13025), SDXL's 256-dim time-id sinusoids.
    """
    model_family = get_family(family)
    base = copy.deepcopy(_read_skeleton(model_family.config_dir))
    unet_cfg = {**base["unet"], **(unet or {})}
    if unet and "down_block_types" in unet and "up_block_types" not in unet:
        unet_cfg["up_block_types"] = [t.replace("Down", "Up") for t in reversed(unet_cfg["down_block_types"])]
    if model_family.head_dim_64:
        unet_cfg["attention_head_dim"] = [max(1, c // 64) for c in unet_cfg["block_out_channels"]]
    if prediction_type == "v_prediction" and model_family.v_sample_size:
        # Only a default-resolution hint (SD2's v-models are the 768 px ones); the weights are the same shapes.
        unet_cfg["sample_size"] = model_family.v_sample_size
    # the latent scale is the family's (LatentFormat), whatever the skeleton file says
    vae_cfg = {**base["vae"], "scaling_factor": model_family.latent.scale_factor, **(vae or {})}
    levels = len(vae_cfg["block_out_channels"])
    vae_cfg["down_block_types"] = ["DownEncoderBlock2D"] * levels
    vae_cfg["up_block_types"] = ["UpDecoderBlock2D"] * levels
    return finish_architecture(family, unet_cfg, vae_cfg, _text_config(base["text_encoder"], text_encoder),
                               _text_config(base["text_encoder_2"], text_encoder_2), base["scheduler"],
                               model_family.config_dir, prediction_type)
