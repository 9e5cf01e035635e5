"""`webui`: launch the web UI, or run headless jobs (`webui txt2img …`, `webui make-tiny-model PATH`).

Imports of torch, diffusers and gradio are deferred to the command that needs them: start-up stays fast and
`webui --help` works instantly."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Nothing ever contacts a model hub or phones home; set before any HF/gradio import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

COMMANDS = ("txt2img", "img2img", "make-tiny-model")


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--data-dir", type=Path, default=Path("."),
                   help="base folder for models/, outputs/ and cache.json (default: current folder)")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="checkpoint folder, searched recursively (default: DATA_DIR/models/Stable-diffusion)")
    p.add_argument("--outdir", type=Path, default=None,
                   help="outputs root; images go to OUTDIR/txt2img-images/DATE/ (default: DATA_DIR/outputs)")
    p.add_argument("--ckpt", default=None, help="checkpoint to load: name, hash or path")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--no-half", action="store_true", help="run the model in fp32 even on a GPU")
    p.add_argument("--no-half-vae", action="store_true", help="run the VAE in fp32 even on a GPU")
    p.add_argument("--precision", choices=["full", "half", "bf16"], default=None,
                   help="full = --no-half; half = fp16 (the default on CUDA); bf16 (also usable on CPU)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--medvram", action="store_true",
                        help="keep weights in RAM; move text encoder, UNet and VAE to the GPU only while each runs")
    memory.add_argument("--lowvram", action="store_true", help="like --medvram, one submodule at a time (slow)")
    p.add_argument("--vae-dir", type=Path, default=None, help="VAE folder (default: DATA_DIR/models/VAE)")
    p.add_argument("--embeddings-dir", type=Path, default=None,
                   help="textual inversion folder, searched recursively (default: DATA_DIR/embeddings)")
    p.add_argument("--lora-dir", type=Path, default=None,
                   help="LoRA / LyCORIS folder, searched recursively (default: DATA_DIR/models/Lora)")


def launch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui", description="Gouache web UI. Subcommands: txt2img, img2img, make-tiny-model (see `webui CMD --help`).")
    _add_common(p)
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 instead of 127.0.0.1")
    return p


def txt2img_parser(prog: str = "webui txt2img",
                   description: str = "Generate images headless; prints each path.") -> argparse.ArgumentParser:
    from .engine.params import GenerationParams

    d = GenerationParams()
    p = argparse.ArgumentParser(prog=prog, description=description)
    _add_common(p)
    p.add_argument("--prompt", default=d.prompt)
    p.add_argument("--negative-prompt", default=d.negative_prompt)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--sampler", default=d.sampler_name)
    p.add_argument("--scheduler", default=d.scheduler)
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--n-iter", type=int, default=d.n_iter, help="batch count")
    p.add_argument("--subseed", type=int, default=d.subseed, help="variation seed (-1 = random)")
    p.add_argument("--subseed-strength", type=float, default=d.subseed_strength, help="variation strength 0..1")
    p.add_argument("--seed-resize-from-w", type=int, default=0, help="resize seed from width (0 = off)")
    p.add_argument("--seed-resize-from-h", type=int, default=0, help="resize seed from height (0 = off)")
    knobs = p.add_argument_group("sampler settings (default: the settings' values)")
    knobs.add_argument("--eta", type=float, default=None, help="eta for ancestral/SDE samplers")
    knobs.add_argument("--eta-ddim", type=float, default=None)
    for knob in ("s-churn", "s-tmin", "s-tmax", "s-noise", "sigma-min", "sigma-max", "rho"):
        knobs.add_argument(f"--{knob}", type=float, default=None)
    knobs.add_argument("--ensd", type=int, default=None, help="eta noise seed delta")
    knobs.add_argument("--rng", choices=["CPU", "GPU"], default=None, help="random number source")
    p.add_argument("--vae", default=None, help="Automatic, None or a VAE file name (default: the setting)")
    knobs.add_argument("--clip-skip", type=int, default=None, help="stop CLIP this many layers from the end (1-12)")
    knobs.add_argument("--emphasis", choices=["Original", "No norm", "Ignore", "None"], default=None)
    return p


def img2img_parser() -> argparse.ArgumentParser:
    from .engine.imaging.ops import RESIZE_MODES
    from .engine.params import MASKED_CONTENT

    p = txt2img_parser("webui img2img", "img2img / inpainting headless; prints each path. Unset options take "
                                        "A1111's UI defaults.")
    g = p.add_argument_group("img2img")
    g.add_argument("--init-image", type=Path, required=True, help="the image to start from")
    g.add_argument("--mask", type=Path, default=None, help="inpainting mask: white = regenerate")
    g.add_argument("--denoising-strength", type=float, default=0.75)
    g.add_argument("--resize-mode", default="Just resize", help=f"one of {', '.join(RESIZE_MODES)} (or 0-3)")
    g.add_argument("--scale", type=float, default=None,
                   help="resize by this factor instead of --width/--height (A1111's 'Resize by')")
    g.add_argument("--mask-blur", type=int, default=4)
    g.add_argument("--invert-mask", action="store_true", help='mask mode "Inpaint not masked"')
    g.add_argument("--masked-content", choices=MASKED_CONTENT, default="original")
    g.add_argument("--only-masked", action="store_true", help='inpaint area "Only masked" (default: whole picture)')
    g.add_argument("--only-masked-padding", type=int, default=32)
    return p


def _paths(args) -> tuple[Path, Path]:
    ckpt_dir = args.ckpt_dir or args.data_dir / "models" / "Stable-diffusion"
    outdir = args.outdir or args.data_dir / "outputs"
    return ckpt_dir, outdir


def _manager(args):
    import torch

    from .engine.manager import PipelineManager

    ckpt_dir, _ = _paths(args)
    full = args.no_half or args.precision == "full"
    dtype = torch.float32 if full else {"half": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    return PipelineManager(ckpt_dir, args.data_dir, device=args.device, dtype=dtype,
                           embeddings_dir=args.embeddings_dir, vae_dir=args.vae_dir,
                           vae_dtype=torch.float32 if (full or args.no_half_vae) else None,
                           offload="medvram" if args.medvram else "lowvram" if args.lowvram else "none",
                           lora_dir=args.lora_dir)


def _params(args):
    from .engine.params import GenerationParams

    return GenerationParams(
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps, sampler_name=args.sampler,
        scheduler=args.scheduler, cfg_scale=args.cfg_scale, seed=args.seed, width=args.width,
        height=args.height, batch_size=args.batch_size, n_iter=args.n_iter, model=args.ckpt,
        subseed=args.subseed, subseed_strength=args.subseed_strength, seed_resize_from_w=args.seed_resize_from_w,
        seed_resize_from_h=args.seed_resize_from_h, eta=args.eta, eta_ddim=args.eta_ddim, s_churn=args.s_churn,
        s_tmin=args.s_tmin, s_tmax=args.s_tmax, s_noise=args.s_noise, sigma_min=args.sigma_min,
        sigma_max=args.sigma_max, rho=args.rho, ensd=args.ensd, rng=args.rng, clip_skip=args.clip_skip,
        emphasis=args.emphasis, vae=args.vae)


def _report(processed) -> int:
    for warning in processed.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in processed.paths:
        print(path)
    return 0


def run_txt2img(argv: list[str]) -> int:
    args = txt2img_parser().parse_args(argv)
    _, outdir = _paths(args)
    return _report(_manager(args).txt2img(_params(args), outdir))


def run_img2img(argv: list[str]) -> int:
    args = img2img_parser().parse_args(argv)
    from .engine.img2img import MAX_INIT_PIXELS
    from .engine.imaging.ops import open_image, open_mask, resize_mode_index
    from .engine.params import MASKED_CONTENT

    init = open_image(args.init_image, MAX_INIT_PIXELS)
    mask = open_mask(args.mask, MAX_INIT_PIXELS) if args.mask else None
    params = _params(args).replace(
        denoising_strength=args.denoising_strength, resize_mode=resize_mode_index(args.resize_mode),
        mask_blur=args.mask_blur, inpainting_mask_invert=args.invert_mask,
        inpainting_fill=MASKED_CONTENT.index(args.masked_content), inpaint_full_res=args.only_masked,
        inpaint_full_res_padding=args.only_masked_padding)
    if args.scale is not None:
        from .engine.imaging.ops import scale_to_size

        width, height = scale_to_size(*init.size, args.scale)
        params = params.replace(width=width, height=height)
    _, outdir = _paths(args)
    return _report(_manager(args).img2img(params, init, mask, outdir))


def run_make_tiny_model(argv: list[str]) -> int:
    from .engine.models.families import all_families

    p = argparse.ArgumentParser(prog="webui make-tiny-model",
                                description="Write a tiny random-weight checkpoint in the original single-file layout.")
    p.add_argument("path", type=Path, help="output file, .safetensors or .ckpt")
    p.add_argument("--seed", type=int, default=0)
    families = [f.key for f in all_families()]
    p.add_argument("--family", choices=families, default=families[0])
    p.add_argument("--inpainting", action="store_true", help="the 9-channel inpainting variant")
    p.add_argument("--v-prediction", action="store_true", help="a v-prediction model (SD2 768-v style)")
    args = p.parse_args(argv)
    from .engine.models.tiny import make_tiny_checkpoint

    print(make_tiny_checkpoint(args.path, seed=args.seed, family=args.family, inpainting=args.inpainting,
                               prediction="v_prediction" if args.v_prediction else "epsilon"))
    return 0


def run_ui(argv: list[str]) -> int:
    args = launch_parser().parse_args(argv)
    from .ui.app import launch

    ckpt_dir, outdir = _paths(args)
    launch(_manager(args), outdir=outdir, checkpoint=args.ckpt, host="0.0.0.0" if args.listen else "127.0.0.1",
           port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    runner = {"txt2img": run_txt2img, "img2img": run_img2img, "make-tiny-model": run_make_tiny_model,
              None: run_ui}[command]
    try:
        return runner(argv[1:] if command else argv)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure a user can cause gets one clear line
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def _is_user_error(e: Exception) -> bool:
    from .engine.errors import UserError

    return isinstance(e, UserError)


if __name__ == "__main__":
    sys.exit(main())
