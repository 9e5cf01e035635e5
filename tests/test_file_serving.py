"""Files reach the browser only from where they belong: a LoRA preview that is a symlink out of the LoRA
folder is not offered (so never registered with gradio's file route)."""
from __future__ import annotations

from safetensors.torch import save_file
import torch

from webui.engine.lora.library import LoraLibrary
from webui.engine.models.checkpoints import HashCache


def test_a_preview_symlinked_out_of_the_lora_folder_is_not_offered(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not for the browser")
    lora_dir = tmp_path / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    for name in ("x", "y"):
        save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 1)}, str(lora_dir / f"{name}.safetensors"))
    (lora_dir / "x.png").symlink_to(secret)
    (lora_dir / "y.png").write_bytes(b"\x89PNG a real preview")
    library = LoraLibrary(lora_dir, HashCache(tmp_path / "cache.json"))
    previews = {info.name: info.preview for info in library.list()}
    assert previews["x"] is None
    assert previews["y"] == lora_dir / "y.png"
