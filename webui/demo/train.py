"""Train the demo checkpoint from scratch: VAE, then a latent pool, then UNet + CLIP text encoder together.

    python scripts/train_demo.py --state-dir cache/demo-train            # starts (refuses an existing state)
    python scripts/train_demo.py --state-dir cache/demo-train --resume   # continues a killed run
    python scripts/train_demo.py --state-dir cache/demo-train --export-only   # writes the checkpoint now

The modules are exactly those the loader builds for an SD1 file (make_architecture + diffusers/transformers),
exported with the loader's own LDM key map, so the checkpoint is detected like any community SD1.x file.

Everything random is drawn from generators seeded by (seed, phase, step), so a resumed run sees the same
batches, noise and timesteps a fresh run would. State is written every --save-minutes (atomically), so a killed
run loses at most that much work.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import shapes

SCRIPT_VERSION = "1"
TARGET_LATENT_STD = 1.0  # after the family's 0.18215 scale, as SD's own VAE gives roughly

UNET = {"block_out_channels": [64, 128, 128], "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3, "cross_attention_dim": 128}
# SD's VAE normalises with 32 groups everywhere (the loader assumes it). With one channel per group a flat colour
# normalises to nothing and the VAE cannot learn colours; three per group (96) lets it carry them.
VAE = {"block_out_channels": [96, 96, 96, 96], "layers_per_block": 1, "latent_channels": 4}
TEXT = {"hidden_size": 128, "num_hidden_layers": 3, "intermediate_size": 512, "vocab_size": 49408,
        "max_position_embeddings": 77}


@dataclass
class Config:
    seed: int = 0
    vae_steps: int = 2500
    vae_crop_steps: int = 2000  # the first steps train on 32×32 crops: 4× cheaper, the convs do not care
    vae_batch: int = 8
    vae_lr: float = 5e-4
    pool_size: int = 40000
    unet_steps: int = 16000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 300
    ema: float = 0.999
    caption_dropout: float = 0.1
    min_snr: float = 5.0
    fills: tuple = ("plain",)  # fills of the base model's pool; the VAE also sees stripes (for the demo LoRA)
    extra: dict = field(default_factory=dict)


UNET_PHASE_SETTINGS = {"pool_size", "unet_steps", "batch", "lr", "warmup", "ema", "caption_dropout", "min_snr"}


def architecture():
    from ..engine.models.architecture import make_architecture
    return make_architecture(family().key, unet=UNET, vae=VAE, text_encoder=TEXT)


def family():
    """The demo model is an SD1: CLIP text encoder, 8-head UNet, SD's 0.18215-scaled VAE."""
    from ..engine.models.families.sd1 import SD1_FAMILY
    return SD1_FAMILY


def new_modules(seed: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    arch = architecture()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(arch.unet_config)
    vae = AutoencoderKL.from_config(arch.vae_config)
    text = CLIPTextModel(CLIPTextConfig.from_dict(arch.text_encoder_config))
    return unet, vae, text


def tokenizer():
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(str(architecture().tokenizer_dir), local_files_only=True)


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    # BOS, text, EOS, EOS padding to 77: the chunk the engine's prompt encoder builds for SD1
    return torch.tensor(tok(captions, padding="max_length", max_length=77, truncation=True).input_ids)


def alphas_cumprod() -> torch.Tensor:
    sched = architecture().scheduler_config
    betas = torch.linspace(sched["beta_start"] ** 0.5, sched["beta_end"] ** 0.5, sched["num_train_timesteps"],
                           dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def save_state(state: dict, path: Path) -> None:
    """A training state written whole or not at all: a run killed while saving keeps the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_safetensors(tensors: dict, out: Path, metadata: dict) -> Path:
    """An exported model file, written under a temporary name and moved into place."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    return out


def generator(seed: int, phase: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash_int(f"{seed}:{phase}:{step}"))


def hash_int(text: str) -> int:
    import hashlib
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")


def images(indices, seed: int, fills, two_objects=0.2, stripe_period=shapes.FINE_STRIPE_PERIOD):
    """(pictures as a [-1, 1] batch, their scenes)."""
    items = [shapes.sample(int(i), seed, fills, two_objects, stripe_period) for i in indices]
    x = torch.stack([torch.from_numpy(shapes.to_array(im)).permute(2, 0, 1) for im, _, _ in items])
    return x, [scene for _, _, scene in items]


def denoising_loss(unet, text, tok, pool: dict, ac: torch.Tensor, g: torch.Generator, rng: random.Random,
                   batch: int, caption_dropout: float, min_snr: float, autocast=None) -> tuple[torch.Tensor, list]:
    """One batch of the ε-prediction loss (min-SNR-γ weighted) on pool latents, captions worded afresh by `rng`
    (dropped to "" at `caption_dropout`, for CFG). Returns (loss, captions)."""
    import contextlib

    device = ac.device
    idx = torch.randint(0, len(pool["scenes"]), (batch,), generator=g)
    mean, std = pool["mean"][idx].float(), pool["std"][idx].float()
    latents = mean + std * torch.randn(mean.shape, generator=g)
    t = torch.randint(0, len(ac), (batch,), generator=g)
    noise = torch.randn(latents.shape, generator=g)
    captions = ["" if rng.random() < caption_dropout else shapes.caption(pool["scenes"][i], rng)
                for i in idx.tolist()]
    latents, noise, t = latents.to(device), noise.to(device), t.to(device)
    a = ac[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    with autocast or contextlib.nullcontext():
        cond = text(tokenize(tok, captions).to(device)).last_hidden_state
        pred = unet(noisy, t, cond).sample.float()
    snr = a.flatten() / (1 - a.flatten())
    weight = snr.clamp(max=min_snr) / snr
    return (weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))).mean(), captions


class Ema:
    def __init__(self, modules, decay):
        self.decay = decay
        self.shadow = [{k: v.detach().clone().float() for k, v in m.state_dict().items()} for m in modules]

    @torch.no_grad()
    def update(self, modules, step):
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, module in zip(self.shadow, modules):
            for k, v in module.state_dict().items():
                if v.dtype.is_floating_point:
                    shadow[k].lerp_(v.float(), 1 - decay)
                else:
                    shadow[k].copy_(v)


class Trainer:
    def __init__(self, state_dir: Path, config: Config, device: str = "cpu"):
        self.dir = Path(state_dir)
        self.cfg = config
        self.device = torch.device(device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=self.device.type == "cuda")
        self.unet, self.vae, self.text = new_modules(config.seed)
        self.phase, self.step = "vae", 0
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), config.vae_lr, weight_decay=0.0)
        self.opt = self._unet_optimizer()
        self.ema = None
        self.pool = None
        self.last_save = time.monotonic()

    def _unet_optimizer(self):
        decay, no_decay = [], []
        for module in (self.unet, self.text):
            for name, p in module.named_parameters():
                (no_decay if p.dim() < 2 or "embedding" in name else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                 self.cfg.lr, betas=(0.9, 0.99))

    # ------------------------------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def save(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {"config": asdict(self.cfg), "phase": self.phase, "step": self.step,
                 "unet": self.unet.state_dict(), "vae": self.vae.state_dict(), "text": self.text.state_dict(),
                 "vae_opt": self.vae_opt.state_dict(), "opt": self.opt.state_dict(),
                 "ema": self.ema.shadow if self.ema else None}
        save_state(state, self.state_path)
        self.last_save = time.monotonic()

    def load(self):
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        saved = {**state["config"], "fills": tuple(state["config"]["fills"])}
        changed = sorted(k for k in saved if saved[k] != asdict(self.cfg).get(k))
        # settings of the UNet phases may still change while the VAE is being trained: they have not acted yet
        free = UNET_PHASE_SETTINGS if state["phase"] in ("vae", "pool") else set()
        if set(changed) - free:
            raise SystemExit(f"cannot resume: the state in {self.dir} was made with other settings "
                             f"({', '.join(k for k in changed if k not in free)})")
        self.phase, self.step = state["phase"], state["step"]
        self.unet.load_state_dict(state["unet"])
        self.vae.load_state_dict(state["vae"])
        self.text.load_state_dict(state["text"])
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.opt.load_state_dict(state["opt"])
        if state["ema"] is not None:
            self.ema = Ema((self.unet, self.text), self.cfg.ema)
            self.ema.shadow = state["ema"]

    def maybe_save(self, minutes: float):
        if time.monotonic() - self.last_save > minutes * 60:
            self.save()

    # ------------------------------------------------------------------------------------------ phases
    def run(self, save_minutes: float = 3.0, stop_after: int | None = None):
        """Train to the end of the schedule (or `stop_after` optimiser steps of this call, for tests)."""
        budget = [stop_after]
        if self.phase == "vae":
            self._train_vae(save_minutes, budget)
        if self.phase == "pool":
            self._make_pool()
        if self.phase == "unet":
            self._train_unet(save_minutes, budget)
        self.save()

    def _spend(self, budget) -> bool:
        if budget[0] is None:
            return True
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        return True

    def _train_vae(self, save_minutes, budget):
        from tqdm import tqdm
        cfg, vae = self.cfg, self.vae.to(self.device).train()
        bar = tqdm(total=cfg.vae_steps, initial=self.step, desc="VAE", unit="step", smoothing=0.05)
        while self.step < cfg.vae_steps and self._spend(budget):
            g = generator(cfg.seed, "vae", self.step)
            idx = torch.randint(0, 2**31 - 1, (cfg.vae_batch,), generator=g)
            x, _ = images(idx, cfg.seed + 1, fills=("plain", "plain", "striped"), two_objects=0.3)
            if self.step < cfg.vae_crop_steps:
                i, j = torch.randint(0, shapes.SIZE // 2 + 1, (2,), generator=g).tolist()
                x = x[:, :, i:i + shapes.SIZE // 2, j:j + shapes.SIZE // 2]
            x = x.to(self.device)
            with self.autocast:
                post = vae.encode(x).latent_dist
                z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(self.device)
                y = vae.decode(z).sample.float()
            kl = post.kl().mean() / (x[0].numel())
            loss = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x) + 1e-4 * kl
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.vae_opt.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", rel=f"{F.mse_loss(y, x).item() / x.var().item():.3f}")
            self.maybe_save(save_minutes)
        bar.close()
        if self.step >= cfg.vae_steps:
            self._normalise_latents()
            self.phase, self.step = "pool", 0
            self.save()

    @torch.no_grad()
    def _normalise_latents(self):
        """Scale the VAE's latent space so latents × 0.18215 (SD1's fixed factor) have unit spread: the mean half
        of quant_conv is multiplied by c and post_quant_conv divided by c, which changes nothing else."""
        vae = self.vae.eval()
        x, _ = images(range(256), self.cfg.seed + 2, fills=("plain",))
        mean = vae.encode(x.to(self.device)).latent_dist.mean
        std = (mean * vae.config.scaling_factor).std().item()
        c = TARGET_LATENT_STD / std
        n = vae.config.latent_channels
        vae.quant_conv.weight[:n] *= c
        vae.quant_conv.bias[:n] *= c
        vae.quant_conv.bias[n:] += 2 * math.log(c)
        vae.post_quant_conv.weight /= c

    @torch.no_grad()
    def _make_pool(self):
        from tqdm import tqdm
        cfg, vae = self.cfg, self.vae.to(self.device).eval()
        means, stds, scenes = [], [], []
        for start in tqdm(range(0, cfg.pool_size, 64), desc="latent pool", unit="batch"):
            idx = range(start, min(start + 64, cfg.pool_size))
            x, sc = images(idx, cfg.seed + 3, fills=cfg.fills)
            post = vae.encode(x.to(self.device)).latent_dist
            means.append((post.mean * vae.config.scaling_factor).half().cpu())
            stds.append((post.std * vae.config.scaling_factor).half().cpu())
            scenes += sc
        self.pool = {"mean": torch.cat(means), "std": torch.cat(stds), "scenes": scenes}
        torch.save({"mean": self.pool["mean"], "std": self.pool["std"],
                    "scenes": [json.dumps(scene_dict(s)) for s in scenes]}, self.dir / "pool.pt")
        self.phase, self.step = "unet", 0
        self.ema = Ema((self.unet, self.text), cfg.ema)
        self.save()

    def _load_pool(self):
        if self.pool is None:
            data = torch.load(self.dir / "pool.pt", map_location="cpu", weights_only=True)
            self.pool = {"mean": data["mean"], "std": data["std"],
                         "scenes": [scene_from_dict(json.loads(s)) for s in data["scenes"]]}
        return self.pool

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.unet_steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def _train_unet(self, save_minutes, budget):
        from tqdm import tqdm
        cfg, pool = self.cfg, self._load_pool()
        unet, text = self.unet.to(self.device).train(), self.text.to(self.device).train()
        self.vae.requires_grad_(False)
        tok = tokenizer()
        ac = alphas_cumprod().to(self.device)
        bar = tqdm(total=cfg.unet_steps, initial=self.step, desc="UNet+text", unit="step", smoothing=0.05)
        while self.step < cfg.unet_steps and self._spend(budget):
            loss, _ = denoising_loss(unet, text, tok, pool, ac, generator(cfg.seed, "unet", self.step),
                                     random.Random(hash_int(f"{cfg.seed}:captions:{self.step}")), cfg.batch,
                                     cfg.caption_dropout, cfg.min_snr, self.autocast)
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text.parameters()], 1.0)
            self.opt.step()
            self.ema.update((unet, text), self.step)
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            self.maybe_save(save_minutes)
        bar.close()
        if self.step >= cfg.unet_steps:
            self.phase = "done"

    # ------------------------------------------------------------------------------------------ export
    def export(self, out: Path) -> Path:
        """The single-file SD1 checkpoint (fp16, EMA weights where there are any) with its training metadata."""

        from ..engine.models.ldm_layout import to_ldm_state_dict

        unet, vae, text = new_modules(self.cfg.seed)
        unet.load_state_dict(self.unet.state_dict())
        vae.load_state_dict(self.vae.state_dict())
        text.load_state_dict(self.text.state_dict())
        if self.ema is not None:
            unet.load_state_dict(self.ema.shadow[0])
            text.load_state_dict(self.ema.shadow[1])
        sd = {k: v.detach().to(torch.float16).contiguous()
              for k, v in to_ldm_state_dict(unet, vae, text, family=family().key).items()}
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        steps = self.step if self.phase == "unet" else (self.cfg.unet_steps if self.phase == "done" else 0)
        metadata = {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": "stable-diffusion-v1",
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
            "modelspec.title": "Gouache demo (shapes)",
            "modelspec.description": "A tiny SD1-architecture model trained from scratch on procedural coloured "
                                     "shapes; native size 64x64.",
            "modelspec.resolution": f"{shapes.SIZE}x{shapes.SIZE}",
            "modelspec.prediction_type": "epsilon",
            "gouache.demo.script_version": SCRIPT_VERSION,
            "gouache.demo.dataset": json.dumps(dataset_recipe()),
            "gouache.demo.config": json.dumps(asdict(self.cfg)),
            "gouache.demo.unet_steps": str(steps),
            "gouache.demo.vae_steps": str(self.cfg.vae_steps),
        }
        return write_safetensors(sd, out, metadata)


def dataset_recipe() -> dict:
    return {"version": shapes.RECIPE_VERSION, "size": shapes.SIZE, "colors": shapes.COLORS, "shapes": shapes.SHAPES,
            "positions": shapes.POSITIONS, "radii": shapes.RADII, "templates": shapes.TRAIN_TEMPLATES,
            "two_object_templates": shapes.TWO_TEMPLATES}


def scene_dict(scene: shapes.Scene) -> dict:
    return {"background": scene.background, "things": [asdict(t) for t in scene.things]}


def scene_from_dict(d: dict) -> shapes.Scene:
    return shapes.Scene(d["background"], tuple(shapes.Thing(**t) for t in d["things"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the Gouache demo checkpoint from scratch (CPU or GPU).")
    parser.add_argument("--state-dir", type=Path, default=Path("cache/demo-train"))
    parser.add_argument("--out", type=Path, default=Path("models/Stable-diffusion/gouache-demo.safetensors"))
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --state-dir")
    parser.add_argument("--export-only", action="store_true", help="write the checkpoint from the saved state")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=Config.vae_steps)
    parser.add_argument("--vae-crop-steps", type=int, default=Config.vae_crop_steps)
    parser.add_argument("--unet-steps", type=int, default=Config.unet_steps)
    parser.add_argument("--pool-size", type=int, default=Config.pool_size)
    parser.add_argument("--batch", type=int, default=Config.batch)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = Config(seed=args.seed, vae_steps=args.vae_steps, vae_crop_steps=args.vae_crop_steps,
                    unet_steps=args.unet_steps, pool_size=args.pool_size, batch=args.batch)
    trainer = Trainer(args.state_dir, config, args.device)
    exists = trainer.state_path.exists()
    if args.export_only:
        if not exists:
            sys.exit(f"no training state in {args.state_dir}")
        trainer.load()
        print(trainer.export(args.out))
        return
    if exists and not args.resume:
        sys.exit(f"{trainer.state_path} exists: pass --resume to continue it, or choose another --state-dir")
    if args.resume:
        if not exists:
            sys.exit(f"nothing to resume: no {trainer.state_path}")
        trainer.load()
    trainer.run(args.save_minutes, args.stop_after)
    if trainer.phase == "done":
        print(trainer.export(args.out))


if __name__ == "__main__":
    main()
