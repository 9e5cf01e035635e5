"""Models: which architecture a checkpoint is, and its modules built from it (sizes from tensor shapes only).

    families/      one ModelFamily per family (SD1, SD2, SDXL, SDXL refiner): what only that family knows
    architecture   Architecture, ArchitectureError, make_architecture: bundled config skeletons (configs/,
                   written by scripts/make_configs.py) plus sizes; the conventions shapes cannot tell
    detect         detect(state_dict, yaml_text): family, variant, prediction type and every size, from shapes
    build          Components, empty_modules, load_weights, build_components: exact weights into meta-built modules
    folder         detect_folder, build_components_from_folder: diffusers-format folders, local files only
    checkpoints    finding, hashing and safely reading checkpoint files;  vae: external VAE files
    ldm_layout     the single-file (LDM) key layout;  attention: attention backends;  tiny: tiny test models

Each family comes plain or inpainting (9 UNet input channels). Depth (5 channels), instruct-pix2pix (8), unCLIP
and upscaler UNets are refused with a message that names them.
"""
from __future__ import annotations

from pathlib import Path

from .families import ModelFamily, all_families, get_family
from .build import (
    Components,
    Modules,
    build_components,
    empty_modules,
    load_weights,
)
from .architecture import (
    CONFIGS_DIR,
    PREDICTION_TYPES,
    Architecture,
    ArchitectureError,
    make_architecture,
)
from .detect import detect, parameterization
from .folder import build_components_from_folder, detect_folder

__all__ = [
    "CONFIGS_DIR", "PREDICTION_TYPES", "Architecture", "ArchitectureError", "Components", "ModelFamily", "Modules",
    "all_families", "get_family",
    "build_components", "build_components_from_folder", "detect", "detect_folder", "empty_modules",
    "load_weights", "make_architecture", "parameterization", "sidecar_yaml",
]


def sidecar_yaml(checkpoint_path) -> str | None:
    """The text of `<checkpoint without suffix>.yaml` next to a checkpoint (A1111's and Forge's convention for
    an LDM config that says `parameterization: "v"`), or None. Pass it to detect(…, yaml_text=…)."""
    path = Path(checkpoint_path).with_suffix(".yaml")
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None
