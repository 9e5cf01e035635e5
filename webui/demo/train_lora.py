"""Train the demo LoRA (a "striped" fill the base model has never seen) on top of the demo checkpoint.

    python scripts/train_demo_lora.py --base models/Stable-diffusion/gouache-demo.safetensors \\
        --state-dir cache/demo-lora [--resume]

The result is an ordinary kohya-format LoRA (`lora_unet_…` / `lora_te_text_model_…` keys, `.alpha`, `ss_*`
metadata with ss_tag_frequency): the loader applies it like any community file. Targets are kohya's defaults for
SD1: every Linear / 1×1 conv inside the UNet's transformer blocks, and the text encoder's attention and MLP.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import shapes
from .train import alphas_cumprod, denoising_loss, generator, hash_int, images, save_state, write_safetensors

SCRIPT_VERSION = "1"
NAME = "gouache-demo-stripes"


@dataclass
class LoraConfig:
    seed: int = 0
    rank: int = 8
    alpha: float = 8.0
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    pool_size: int = 4000
    min_snr: float = 5.0
    caption_dropout: float = 0.05


class LoraModule(nn.Module):
    """down (in → rank) then up (rank → out), the same kind of layer as the target (Linear or 1×1 conv)."""

    def __init__(self, target: nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(target, nn.Conv2d):
            self.down = nn.Conv2d(target.in_channels, rank, 1, bias=False)
            self.up = nn.Conv2d(rank, target.out_channels, 1, bias=False)
        else:
            self.down = nn.Linear(target.in_features, rank, bias=False)
            self.up = nn.Linear(rank, target.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # starts as the identity patch: the base model unchanged
        self.scale = alpha / rank
        self.alpha = alpha

    def forward(self, x):
        return self.up(self.down(x)) * self.scale


def targets(unet: nn.Module, text: nn.Module) -> dict[str, nn.Module]:
    """{kohya key: module} for kohya's default SD1 targets."""
    out = {}
    for name, module in unet.named_modules():
        inside = ".attentions." in f".{name}" or name.startswith("mid_block.attentions")
        conv1x1 = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
        if inside and (isinstance(module, nn.Linear) or conv1x1):
            out["lora_unet_" + name.replace(".", "_")] = module
    for name, module in text.named_modules():
        core = name.removeprefix("text_model.")
        if isinstance(module, nn.Linear) and (".self_attn." in core or ".mlp." in core):
            out["lora_te_text_model_" + core.replace(".", "_")] = module
    return out


def attach(modules: dict[str, nn.Module], rank: int, alpha: float, seed: int) -> nn.ModuleDict:
    torch.manual_seed(seed)
    loras = nn.ModuleDict()
    for key, module in modules.items():
        lora = LoraModule(module, rank, alpha)
        loras[key] = lora
        module.register_forward_hook(lambda m, args, out, lora=lora: out + lora(args[0]))
    return loras


def load_base(path: Path):
    from ..engine.models.build import build_components
    from ..engine.models.checkpoints import read_state_dict
    from ..engine.models.detect import detect

    sd = read_state_dict(Path(path))
    components = build_components(sd, detect(sd))
    for module in (components.unet, components.vae, components.text_encoder):
        module.requires_grad_(False).float()
    return components


class LoraTrainer:
    def __init__(self, base: Path, state_dir: Path, config: LoraConfig):
        self.base, self.dir, self.cfg = Path(base), Path(state_dir), config
        self.c = load_base(base)
        self.loras = attach(targets(self.c.unet, self.c.text_encoder), config.rank, config.alpha, config.seed)
        self.opt = torch.optim.AdamW(self.loras.parameters(), config.lr, weight_decay=0.0)
        self.step = 0
        self.tags: Counter = Counter()
        self.last_save = time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.dir / "lora-state.pt"

    def save(self):
        save_state({"config": asdict(self.cfg), "step": self.step, "loras": self.loras.state_dict(),
                    "opt": self.opt.state_dict(), "tags": dict(self.tags)}, self.state_path)
        self.last_save = time.monotonic()

    def load(self):
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if state["config"] != asdict(self.cfg):
            raise SystemExit(f"cannot resume: the state in {self.dir} was made with other settings")
        self.step = state["step"]
        self.loras.load_state_dict(state["loras"])
        self.opt.load_state_dict(state["opt"])
        self.tags = Counter(state["tags"])

    @torch.no_grad()
    def _pool(self):
        path = self.dir / "lora-pool.pt"
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        from .train import scene_dict
        vae, cfg = self.c.vae.eval(), self.cfg
        means, stds, scenes = [], [], []
        for start in range(0, cfg.pool_size, 64):
            x, sc = images(range(start, min(start + 64, cfg.pool_size)), cfg.seed + 11, fills=("striped",),
                           two_objects=0.1, stripe_period=shapes.STRIPE_PERIOD)
            post = vae.encode(x).latent_dist
            means.append(post.mean * vae.config.scaling_factor)
            stds.append(post.std * vae.config.scaling_factor)
            scenes += [json.dumps(scene_dict(s)) for s in sc]
        pool = {"mean": torch.cat(means).half(), "std": torch.cat(stds).half(), "scenes": scenes}
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.save(pool, path)
        return pool

    def run(self, save_minutes: float = 3.0, stop_after: int | None = None):
        from tqdm import tqdm

        from .train import scene_from_dict
        cfg, c = self.cfg, self.c
        pool = self._pool()
        pool = {**pool, "scenes": [scene_from_dict(json.loads(s)) for s in pool["scenes"]]}
        ac = alphas_cumprod()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="LoRA", unit="step", smoothing=0.05)
        done = 0
        while self.step < cfg.steps and (stop_after is None or done < stop_after):
            loss, captions = denoising_loss(c.unet, c.text_encoder, c.tokenizer, pool, ac,
                                            generator(cfg.seed, "lora", self.step),
                                            random.Random(hash_int(f"{cfg.seed}:lora-captions:{self.step}")),
                                            cfg.batch, cfg.caption_dropout, cfg.min_snr)
            self.tags.update(tag.strip() for text in captions if text for tag in text.split(","))
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (self.step + 1) / 100)
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
        sd = {}
        for key, lora in self.loras.items():
            sd[f"{key}.lora_down.weight"] = lora.down.weight.detach().half().contiguous()
            sd[f"{key}.lora_up.weight"] = lora.up.weight.detach().half().contiguous()
            sd[f"{key}.alpha"] = torch.tensor(lora.alpha, dtype=torch.float16)
        cfg = self.cfg
        metadata = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(cfg.rank),
            "ss_network_alpha": str(cfg.alpha),
            "ss_base_model_version": "sd_v1",
            "ss_v2": "False",
            "ss_sd_model_name": self.base.name,
            "ss_output_name": NAME,
            "ss_resolution": f"({shapes.SIZE}, {shapes.SIZE})",
            "ss_steps": str(self.step),
            "ss_max_train_steps": str(cfg.steps),
            "ss_learning_rate": str(cfg.lr),
            "ss_unet_lr": str(cfg.lr),
            "ss_text_encoder_lr": str(cfg.lr),
            "ss_train_batch_size": str(cfg.batch),
            "ss_num_train_images": str(cfg.pool_size),
            "ss_training_comment": "striped fill for the Gouache demo model; trigger word: striped",
            "ss_tag_frequency": json.dumps({"1_striped shapes": dict(self.tags.most_common(200))}),
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.title": "Gouache demo stripes",
            "modelspec.resolution": f"{shapes.SIZE}x{shapes.SIZE}",
            "gouache.demo.script_version": SCRIPT_VERSION,
            "gouache.demo.config": json.dumps(asdict(cfg)),
        }
        return write_safetensors(sd, out, metadata)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the Gouache demo LoRA (striped fill) on the demo model.")
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/gouache-demo.safetensors"))
    parser.add_argument("--state-dir", type=Path, default=Path("cache/demo-lora"))
    parser.add_argument("--out", type=Path, default=Path(f"models/Lora/{NAME}.safetensors"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=LoraConfig.steps)
    parser.add_argument("--pool-size", type=int, default=LoraConfig.pool_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.base.exists():
        sys.exit(f"no base checkpoint {args.base}: train it first (scripts/train_demo.py)")
    trainer = LoraTrainer(args.base, args.state_dir,
                          LoraConfig(seed=args.seed, steps=args.steps, pool_size=args.pool_size))
    if trainer.state_path.exists() and not args.resume:
        sys.exit(f"{trainer.state_path} exists: pass --resume to continue it, or choose another --state-dir")
    if args.resume:
        if not trainer.state_path.exists():
            sys.exit(f"nothing to resume: no {trainer.state_path}")
        trainer.load()
    trainer.run(args.save_minutes, args.stop_after)
    if trainer.step >= trainer.cfg.steps:
        print(trainer.export(args.out))


if __name__ == "__main__":
    main()
