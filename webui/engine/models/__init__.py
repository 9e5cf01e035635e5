"""Which architecture is a checkpoint, and build its modules: sizes come from tensor shapes only.

The public face of four modules, split by job:
    arch_configs  Architecture, ArchitectureError, make_architecture: bundled per-family config skeletons
                  (configs/, written by scripts/make_configs.py) plus sizes; the conventions shapes cannot tell.
    arch_detect   detect(state_dict, yaml_text): family, variant, prediction type and every size, from shapes.
    arch_build    Components, empty_modules, load_weights, build_components: exact weights into meta-built modules.
    arch_folder   detect_folder, build_components_from_folder: diffusers-format folders, local files only.

Families: "sd1" (CLIP-L), "sd2" (OpenCLIP-H, ε or v), "sdxl" (CLIP-L + OpenCLIP-bigG, size embedding),
"sdxl_refiner" (OpenCLIP-bigG only); each plain or inpainting (9 UNet input channels). Depth (5 channels),
instruct-pix2pix (8), unCLIP and upscaler UNets are refused with a message that names them.
"""
from __future__ import annotations

from pathlib import Path

from .arch_build import (
    Components,
    Modules,
    build_components,
    empty_modules,
    load_weights,
)
from .arch_configs import (
    CONFIGS_DIR,
    FAMILIES,
    PREDICTION_TYPES,
    Architecture,
    ArchitectureError,
    make_architecture,
)
from .arch_detect import detect, parameterization
from .arch_folder import build_components_from_folder, detect_folder

__all__ = [
    "CONFIGS_DIR", "FAMILIES", "PREDICTION_TYPES", "Architecture", "ArchitectureError", "Components", "Modules",
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
