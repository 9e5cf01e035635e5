"""Model families as objects: everything the engine knows about SD1, SD2, SDXL and the SDXL refiner lives in
the family's own file (sd1.py, sd2.py, sdxl.py), and code elsewhere asks the family instead of testing names.

A new family is one new file defining a ModelFamily (or a subclass overriding what differs) plus one
`register(...)` call; detection, building, the tiny builder, prompt encoding, conditioning extras and schedules
then pick it up."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class TextTower:
    """Where a family's files keep a text encoder, and how."""
    prefix: str  # state-dict prefix in the single-file layout
    layout: str  # "clip" (OpenAI CLIP as transformers keys) or "openclip" (OpenCLIP's own layout)
    label: str  # for messages: "CLIP text encoder", "OpenCLIP text encoder", …
    pooled: bool = False  # its projected pooled output conditions the UNet (SDXL's bigG)

    @property
    def pad_id(self) -> int | None:
        """OpenCLIP pads chunks with 0 after the EOS; OpenAI CLIP with EOS itself (None)."""
        return 0 if self.layout == "openclip" else None


@dataclass(frozen=True)
class LatentFormat:
    """The VAE's latent space: channels, the scale the UNet sees, and a linear latent → RGB map for previews."""
    channels: int
    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]  # one row per latent channel
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    taesd: str = "taesd"  # the tiny preview decoder trained for this latent space: models/VAE-approx/<taesd>_decoder.pth

    def preview(self, latent: torch.Tensor) -> torch.Tensor:
        """(C, h, w) latent → (3, h, w) approximate RGB in [-1, 1]: cheap enough for every step."""
        factors = torch.tensor(self.rgb_factors, dtype=latent.dtype, device=latent.device)
        bias = torch.tensor(self.rgb_bias, dtype=latent.dtype, device=latent.device)
        return (torch.einsum("chw,cr->rhw", latent, factors) + bias[:, None, None]).clamp(-1, 1)


@dataclass(frozen=True)
class ModelFamily:
    key: str  # internal id: configs/<key>/, `make-tiny-model --family`
    label: str  # what the UI shows: "SD1", "SDXL refiner"
    towers: tuple[TextTower | None, TextTower | None]  # the text_encoder and text_encoder_2 slots
    clip_skip: int  # hidden_states[-clip_skip] conditions the UNet …
    clip_final_norm: bool  # … through the final layer norm or not
    head_dim_64: bool  # UNet heads = channels // 64 (SD2, SDXL); otherwise 8 heads at every level (SD1)
    latent: LatentFormat
    ays_sigmas: tuple[float, ...]  # NVIDIA's Align Your Steps table for this family
    tiny_sizes: Mapping  # sizes of the tiny test model: {"unet": …, "text_encoder": …, "text_encoder_2": …}
    n_time_ids: int = 0  # numbers the UNet embeds beside the pooled text (SDXL's size/crop ids)
    zero_empty_negative: bool = False  # A1111 conditions an empty negative prompt with zeros (SDXL)
    v_sample_size: int | None = None  # default resolution hint of the family's v-prediction models (latent px)
    aliases: tuple[str, ...] = field(default=())

    # --------------------------------------------------------------------------------------- what files hold

    @property
    def config_dir(self) -> Path:
        return CONFIGS_DIR / self.key

    @property
    def container(self) -> str:
        """Where the towers sit: "cond_stage" (cond_stage_model.*) or "conditioner" (conditioner.embedders.*)."""
        prefix = next(t.prefix for t in self.towers if t is not None)
        return "conditioner" if prefix.startswith("conditioner.") else "cond_stage"

    @property
    def tower_layouts(self) -> tuple[str, ...]:
        return tuple(t.layout for t in self.towers if t is not None)

    def display_name(self, prediction_type: str, inpainting: bool) -> str:
        return self.label + (" inpainting" if inpainting else "") + (
            " (v)" if prediction_type == "v_prediction" else "")

    def looks_v(self, state_dict: Mapping, unet_sizes: dict) -> bool:
        """Whether the weights themselves say v-prediction (a .yaml beside the file overrides this)."""
        return False

    @property
    def v_marked_by_weights(self) -> bool:
        """Whether a v-prediction file of this family can be told from an ε one by its weights alone."""
        return False

    def matches_folder(self, unet: dict, text: dict | None, text_2: dict | None) -> bool:
        """Whether a diffusers model folder with these configs is of this family."""
        return False

    def folder_clip_skip(self, text: dict | None) -> int | None:
        """The hidden state to use for a diffusers folder's text encoder, where it differs from clip_skip."""
        return None

    # ------------------------------------------------------------------------------------------ generation

    def time_ids(self, height: int, width: int) -> torch.Tensor | None:
        """(rows, n_time_ids): what the UNet embeds beside the pooled text; the first row conditions the
        prompt, the last the negative prompt. None: the family has none."""
        return None

    def prompt_encoder(self, components, embeddings):
        """The encoder a job's prompts go through: a PromptEncoder, or SDXL's two as one. Textual-inversion
        embeddings are read for the first slot's width, so only an encoder there gets them."""
        from ...prompts.encoder import PromptEncoder

        slot = next(i for i, tower in enumerate(self.towers) if tower is not None)
        return PromptEncoder(*self.slot_modules(components, slot), embeddings if slot == 0 else None,
                             **self.encoder_options(components.arch, self.towers[slot]))

    @staticmethod
    def slot_modules(components, slot: int) -> tuple:
        return ((components.tokenizer, components.text_encoder) if slot == 0
                else (components.tokenizer_2, components.text_encoder_2))

    @staticmethod
    def encoder_options(arch, tower: TextTower) -> dict:
        """The hidden state the UNet was trained on comes from the architecture (a diffusers SD2 folder whose
        text encoder already lacks its last layer uses its last hidden state)."""
        return dict(pad_id=tower.pad_id, hidden_layer=None if arch.clip_skip == 1 else -arch.clip_skip,
                    final_norm=arch.clip_final_norm, pooled=tower.pooled)

    # ----------------------------------------------------------------------------------------- tiny models

    def mark_tiny_v(self, modules) -> None:
        """Make a tiny model's weights say v-prediction the way real files of the family do (looks_v)."""

    def tiny_extras(self, state_dict: Mapping, prediction: str, random) -> dict[str, torch.Tensor]:
        """Non-module tensors real files of the family carry; `random(name, shape)` draws weights."""
        import math

        return {t.prefix + "logit_scale": torch.tensor(math.log(100.0))  # trained CLIP's clamp value
                for t in self.towers if t is not None and t.layout == "openclip"}


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    _FAMILIES[family.key] = family
    return family


def unregister(key: str) -> None:
    _FAMILIES.pop(key, None)


def get_family(key: str) -> ModelFamily:
    try:
        return _FAMILIES[key]
    except KeyError:
        raise ValueError(f"unknown architecture family {key!r} (known: {', '.join(_FAMILIES)})") from None


def all_families() -> list[ModelFamily]:
    return list(_FAMILIES.values())


def family_for_towers(container: str, layouts: tuple[str, ...]) -> ModelFamily | None:
    """The family whose files keep text towers of these layouts in this container."""
    for family in _FAMILIES.values():
        if family.container == container and family.tower_layouts == layouts:
            return family
    return None


def family_for_folder(unet: dict, text: dict | None, text_2: dict | None) -> ModelFamily | None:
    for family in _FAMILIES.values():
        if family.matches_folder(unet, text, text_2):
            return family
    return None


from . import sd1, sd2, sdxl  # noqa: E402  (each registers its families)

__all__ = ["CONFIGS_DIR", "LatentFormat", "ModelFamily", "TextTower", "all_families", "family_for_folder",
           "family_for_towers", "get_family", "register", "sd1", "sd2", "sdxl", "unregister"]
