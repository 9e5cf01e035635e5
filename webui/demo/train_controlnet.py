"""Train the demo canny ControlNet (edges of a shape → the shape) on top of the demo checkpoint.

    python scripts/train_demo_controlnet.py --state-dir cache/demo-controlnet-2 [--resume]

The ControlNet is diffusers' ControlNetModel made from the demo UNet (its encoder copied, zero convs at zero);
UNet and text encoder stay frozen. Its maps are made by the engine's own canny preprocessor at the extension's
default resolution and fitted to the picture as a job fits them, so what it learns is what a user's unit feeds it.
Captions are the dataset's own, a colour-only wording ("a red shape", which names no shape or place: the map has
to), or empty. Exported in the original cldm layout (`control_model.` prefix, fp16), like community files.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import shapes
from .train import (alphas_cumprod, generator, hash_int, images, save_state, scene_dict, scene_from_dict, tokenize,
                    write_safetensors)
from .train_lora import load_base

SCRIPT_VERSION = "2"
NAME = "gouache-demo-canny"
HINT_CHANNELS = (16, 32, 64, 128)  # the hint encoder for 64-px maps: SD's is (16, 32, 96, 256) for 512 px
GENERIC_TEMPLATES = ("a {color} shape", "a {color} shape on a {bg} background", "{color} shape, {bg} background",
                     "a picture of a {color} shape")


@dataclass
class ControlConfig:
    seed: int = 0
    steps: int = 3000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 100
    pool_size: int = 6000
    two_objects: float = 0.1
    full_captions: float = 0.45
    generic_captions: float = 0.35  # the rest are empty
    min_snr: float = 5.0
    # the share of maps made at processor resolution 64 (pixel perfect: crisp 1-px edges); the rest at the
    # extension's default 512, which gives faint edges once fitted to 64 px. Both are what users feed.
    crisp_maps: float = 0.5


def canny_map(picture, resolution: int = 512):
    """The map a canny unit makes from `picture` at the job's size (engine's preprocessor and fit)."""
    from ..engine.control import preprocess
    detected = preprocess.run("canny", picture, resolution, 100, 200)
    return preprocess.fit(detected, picture.width, picture.height, "Crop and Resize")


def init_hint_encoder(embedding):
    """He-initialised convs with zero biases. PyTorch's default init gives biases that swamp a sparse edge map: at
    init a triangle at the left and one at the right came out of the hint encoder 0.03 % apart, and a ControlNet
    trained from there learned to ignore its map. (conv_out stays zero, so the net still starts as a no-op.)"""
    for conv in (embedding.conv_in, *embedding.blocks):
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        torch.nn.init.zeros_(conv.bias)


def generic_caption(scene: shapes.Scene, rng: random.Random) -> str:
    return rng.choice(GENERIC_TEMPLATES).format(color=scene.things[0].color, bg=scene.background)


class ControlTrainer:
    def __init__(self, base: Path, state_dir: Path, config: ControlConfig):
        from diffusers import ControlNetModel

        self.base, self.dir, self.cfg = Path(base), Path(state_dir), config
        self.c = load_base(base)
        torch.manual_seed(config.seed)
        self.net = ControlNetModel.from_unet(self.c.unet, conditioning_embedding_out_channels=HINT_CHANNELS).float()
        init_hint_encoder(self.net.controlnet_cond_embedding)
        self.net.requires_grad_(True).train()
        self.opt = torch.optim.AdamW(self.net.parameters(), config.lr, weight_decay=0.0)
        self.step = 0
        self.last_save = time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.dir / "controlnet-state.pt"

    def save(self):
        save_state({"config": asdict(self.cfg), "step": self.step, "net": self.net.state_dict(),
                    "opt": self.opt.state_dict()}, self.state_path)
        self.last_save = time.monotonic()

    def load(self):
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        # the step count may grow on resume (train longer); anything else must match
        if {**state["config"], "steps": 0} != {**asdict(self.cfg), "steps": 0}:
            raise SystemExit(f"cannot resume: the state in {self.dir} was made with other settings")
        self.step = state["step"]
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    @torch.no_grad()
    def _pool(self):
        path = self.dir / "controlnet-pool.pt"
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        from PIL import Image
        vae, cfg = self.c.vae.eval(), self.cfg
        means, stds, hints, crisp, scenes = [], [], [], [], []
        for start in range(0, cfg.pool_size, 64):
            x, sc = images(range(start, min(start + 64, cfg.pool_size)), cfg.seed + 23, fills=("plain",),
                           two_objects=cfg.two_objects)
            post = vae.encode(x).latent_dist
            means.append(post.mean * vae.config.scaling_factor)
            stds.append(post.std * vae.config.scaling_factor)
            for picture in x:
                pixels = ((picture.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                for resolution, out in ((512, hints), (shapes.SIZE, crisp)):
                    hint = canny_map(Image.fromarray(pixels), resolution)
                    out.append(torch.from_numpy(np.asarray(hint.convert("L"), dtype=np.uint8).copy()))
            scenes += [json.dumps(scene_dict(s)) for s in sc]
        pool = {"mean": torch.cat(means).half(), "std": torch.cat(stds).half(), "hints": torch.stack(hints),
                "crisp_hints": torch.stack(crisp), "scenes": scenes}
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.save(pool, path)
        return pool

    def loss(self, pool, ac, step: int) -> torch.Tensor:
        cfg, c = self.cfg, self.c
        g = generator(cfg.seed, "controlnet", step)
        rng = random.Random(hash_int(f"{cfg.seed}:controlnet-captions:{step}"))
        idx = torch.randint(0, len(pool["scenes"]), (cfg.batch,), generator=g)
        mean, std = pool["mean"][idx].float(), pool["std"][idx].float()
        latents = mean + std * torch.randn(mean.shape, generator=g)
        t = torch.randint(0, len(ac), (cfg.batch,), generator=g)
        noise = torch.randn(latents.shape, generator=g)
        crisp = (torch.rand(cfg.batch, generator=g) < cfg.crisp_maps).view(-1, 1, 1)
        hint = torch.where(crisp, pool["crisp_hints"][idx], pool["hints"][idx])
        hint = (hint.float() / 255.0)[:, None].expand(-1, 3, -1, -1)
        captions = []
        for i in idx.tolist():
            roll, scene = rng.random(), pool["scenes"][i]
            if roll < cfg.full_captions:
                captions.append(shapes.caption(scene, rng))
            elif roll < cfg.full_captions + cfg.generic_captions:
                captions.append(generic_caption(scene, rng))
            else:
                captions.append("")
        a = ac[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        with torch.no_grad():
            cond = c.text_encoder(tokenize(c.tokenizer, captions)).last_hidden_state
        down, mid = self.net(noisy, t, cond, controlnet_cond=hint, return_dict=False)
        pred = c.unet(noisy, t, cond, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid).sample
        snr = a.flatten() / (1 - a.flatten())
        weight = snr.clamp(max=cfg.min_snr) / snr
        return (weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))).mean()

    def run(self, save_minutes: float = 3.0, stop_after: int | None = None):
        from tqdm import tqdm

        cfg = self.cfg
        pool = self._pool()
        pool = {**pool, "scenes": [scene_from_dict(json.loads(s)) for s in pool["scenes"]]}
        ac = alphas_cumprod()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="ControlNet", unit="step", smoothing=0.05)
        done = 0
        while self.step < cfg.steps and (stop_after is None or done < stop_after):
            loss = self.loss(pool, ac, self.step)
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if time.monotonic() - self.last_save > save_minutes * 60:
                self.save()
        bar.close()
        self.save()

    def export(self, out: Path) -> Path:

        from ..engine.models.ldm_layout import controlnet_key
        config = dict(self.net.config)
        sd = {"control_model." + controlnet_key(k, config): v.detach().half().contiguous()
              for k, v in self.net.state_dict().items()}
        metadata = {"gouache.demo.script_version": SCRIPT_VERSION, "gouache.demo.config": json.dumps(asdict(self.cfg)),
                    "gouache.demo.steps": str(self.step), "gouache.demo.base": self.base.name,
                    "modelspec.title": "Gouache demo canny ControlNet", "modelspec.architecture":
                    "stable-diffusion-v1/controlnet", "modelspec.resolution": f"{shapes.SIZE}x{shapes.SIZE}"}
        return write_safetensors(sd, out, metadata)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the Gouache demo canny ControlNet on the demo model.")
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/gouache-demo.safetensors"))
    parser.add_argument("--state-dir", type=Path, default=Path("cache/demo-controlnet-2"))
    parser.add_argument("--out", type=Path, default=Path(f"models/ControlNet/{NAME}.safetensors"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=ControlConfig.steps)
    parser.add_argument("--pool-size", type=int, default=ControlConfig.pool_size)
    parser.add_argument("--batch", type=int, default=ControlConfig.batch)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--export-only", action="store_true", help="write the ControlNet from the saved state now")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.base.exists():
        sys.exit(f"no base checkpoint {args.base}: train it first (scripts/train_demo.py)")
    trainer = ControlTrainer(args.base, args.state_dir, ControlConfig(
        seed=args.seed, steps=args.steps, pool_size=args.pool_size, batch=args.batch))
    if trainer.state_path.exists() and not (args.resume or args.export_only):
        sys.exit(f"{trainer.state_path} exists: pass --resume to continue it, or choose another --state-dir")
    if args.resume or args.export_only:
        if not trainer.state_path.exists():
            sys.exit(f"nothing to resume: no {trainer.state_path}")
        trainer.load()
    if not args.export_only:
        trainer.run(args.save_minutes, args.stop_after)
    if trainer.step >= trainer.cfg.steps or args.export_only:
        print(trainer.export(args.out))


if __name__ == "__main__":
    main()
