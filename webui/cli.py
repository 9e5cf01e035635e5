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

COMMANDS = ("txt2img", "img2img", "extras", "make-tiny-model")


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
    p.add_argument("--precision", choices=["auto", "full", "half", "bf16"], default="auto",
                   help="auto (default): fp16 on CUDA, bf16 on CPUs with native bf16 (AVX-512 BF16/AMX), else fp32; "
                        "full = --no-half; half = fp16; bf16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet and VAE decoder (each picture size compiles once, on first use)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--medvram", action="store_true",
                        help="keep weights in RAM; move text encoder, UNet and VAE to the GPU only while each runs")
    memory.add_argument("--lowvram", action="store_true", help="like --medvram, one submodule at a time (slow)")
    p.add_argument("--vae-dir", type=Path, default=None, help="VAE folder (default: DATA_DIR/models/VAE)")
    p.add_argument("--embeddings-dir", type=Path, default=None,
                   help="textual inversion folder, searched recursively (default: DATA_DIR/embeddings)")
    p.add_argument("--lora-dir", type=Path, default=None,
                   help="LoRA / LyCORIS folder, searched recursively (default: DATA_DIR/models/Lora)")
    p.add_argument("--controlnet-dir", type=Path, default=None,
                   help="ControlNet models folder, searched recursively (default: DATA_DIR/models/ControlNet)")
    p.add_argument("--disable-nan-check", action="store_true",
                   help="save whatever a job makes even when its latent turns NaN (a black picture) instead of "
                        "stopping with an error")
    ext = p.add_argument_group("scripts and extensions")
    ext.add_argument("--extensions-dir", type=Path, default=None,
                     help="user extensions folder (default: DATA_DIR/extensions)")
    ext.add_argument("--disable-all-extensions", action="store_true",
                     help="load no user extension (the built-in scripts stay)")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="run extensions' install.py (arbitrary code from their folders)")


def launch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui", description="Gouache web UI. Subcommands: txt2img, img2img, extras, make-tiny-model (see "
                                   "`webui CMD --help`).")
    _add_common(p)
    p.add_argument("--port", type=int, default=None, help="port (default 7860; 7861 with --nowebui, as A1111)")
    p.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 instead of 127.0.0.1")
    api = p.add_argument_group("HTTP API (AUTOMATIC1111's /sdapi/v1)")
    api.add_argument("--api", action="store_true", help="serve the API alongside the UI (docs at /docs)")
    api.add_argument("--nowebui", action="store_true", help="serve only the API (port 7861 unless --port)")
    api.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="HTTP Basic credentials every API route requires, or a file of them")
    api.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="credentials for the UI's login page, or a file of them")
    api.add_argument("--cors-allow-origins", default=None, metavar="ORIGIN[,ORIGIN]",
                     help="browser origins allowed to call the server (e.g. http://localhost:3000)")
    api.add_argument("--api-log", action="store_true", help="log every API request with its status and time")
    return p


# Option groups of the flags that GenerationParams fields declare (`cli_group`); None = the main options.
FIELD_GROUPS = {"sampler": "sampler settings (default: the settings' values)", "img2img": "img2img",
                "hires": "hires fix (A1111's txt2img second pass; see --enable-hr)"}


def _range_text(d) -> str:
    lo, hi = d.bounds()
    if lo is None or hi is None or d.spec.names is not None:
        return ""
    multiple = f", a multiple of {d.spec.multiple_of}" if d.spec.multiple_of else ""
    return f" ({lo}-{hi}{multiple})"


def add_field_flags(parser: argparse.ArgumentParser, params_cls, groups: dict) -> None:
    """One flag per field of `params_cls` that declares `cli`, into groups[its cli_group] (fields of other
    groups are skipped). dest = the field name; a field coded by `names` takes the names; a bool is a switch."""
    from .engine.fields import declared

    for d in declared(params_cls):
        spec = d.spec
        if spec.cli is None or spec.cli_group not in groups:
            continue
        help_text = (spec.help or spec.label) + _range_text(d)
        kwargs = {"dest": d.name, "help": help_text.replace("%", "%%")}  # argparse %-formats help
        if d.kind is bool:
            kwargs["action"] = "store_true"
        elif spec.names is not None:
            kwargs.update(choices=list(spec.names), default=spec.names[d.value_default])
        else:
            # None (unset: the setting's value) stays the default; img2img fields start at A1111's UI values.
            kwargs.update(type=d.kind, default=d.value_default, choices=spec.choices)
            if spec.choices is None:
                kwargs["metavar"] = spec.cli.lstrip("-").replace("-", "_").upper()
        groups[spec.cli_group].add_argument(spec.cli, **kwargs)


def params_from_args(args: argparse.Namespace, params_cls=None):
    """The request from parsed flags: every declared field whose flag the parser had, plus --ckpt."""
    from .engine.fields import declared
    from .engine.params import GenerationParams

    params_cls = params_cls or GenerationParams
    values = {}
    for d in declared(params_cls):
        if d.spec.cli is not None and hasattr(args, d.name):
            value = getattr(args, d.name)
            values[d.name] = d.spec.names.index(value) if d.spec.names and isinstance(value, str) else value
    return params_cls(**values, model=args.ckpt)


def txt2img_parser(prog: str = "webui txt2img", description: str = "Generate images headless; prints each path.",
                   params_cls=None, hires: bool = True) -> argparse.ArgumentParser:
    """`params_cls`: GenerationParams (the default) or a subclass; its declared fields become the flags.
    `hires`: with hires fix's flags (txt2img's, not img2img's)."""
    from .engine.jobs.hires import DEFAULT_DENOISE
    from .engine.params import GenerationParams

    p = argparse.ArgumentParser(prog=prog, description=description)
    _add_common(p)
    knobs = p.add_argument_group(FIELD_GROUPS["sampler"])
    groups = {None: p, "sampler": knobs}
    if hires:
        groups["hires"] = p.add_argument_group(FIELD_GROUPS["hires"])
        # img2img's field, which hires fix uses too (with A1111's hires default)
        groups["hires"].add_argument("--denoising-strength", dest="denoising_strength", type=float, default=None,
                                     metavar="DENOISING_STRENGTH",
                                     help=f"hires fix's denoising strength (0.0-1.0; default {DEFAULT_DENOISE})")
    add_field_flags(p, params_cls or GenerationParams, groups)
    scripts = p.add_argument_group("script")
    scripts.add_argument("--script", default=None, metavar="NAME",
                         help='a selectable script by title, e.g. "X/Y/Z plot" (A1111\'s script_name)')
    scripts.add_argument("--script-args", default=None, metavar="JSON",
                         help="the script's arguments as a JSON list, in A1111's order (its script_args)")
    return p


def img2img_parser(params_cls=None) -> argparse.ArgumentParser:
    from .engine.imaging.ops import RESIZE_MODES
    from .engine.params import GenerationParams

    params_cls = params_cls or GenerationParams
    p = txt2img_parser("webui img2img", "img2img / inpainting headless; prints each path. Unset options take "
                                        "A1111's UI defaults.", params_cls, hires=False)
    g = p.add_argument_group(FIELD_GROUPS["img2img"])
    # Not request fields (the images, "Resize by"), or (resize mode) one whose names live in imaging/ops.py.
    g.add_argument("--init-image", type=Path, required=True, help="the image to start from")
    g.add_argument("--mask", type=Path, default=None, help="inpainting mask: white = regenerate")
    g.add_argument("--resize-mode", default="Just resize", help=f"one of {', '.join(RESIZE_MODES)} (or 0-3)")
    g.add_argument("--scale", type=float, default=None,
                   help="resize by this factor instead of --width/--height (A1111's 'Resize by')")
    add_field_flags(p, params_cls, {"img2img": g})
    return p


def _paths(args) -> tuple[Path, Path]:
    ckpt_dir = args.ckpt_dir or args.data_dir / "models" / "Stable-diffusion"
    outdir = args.outdir or args.data_dir / "outputs"
    return ckpt_dir, outdir


def _manager(args):
    import torch

    from .engine.manager import PipelineManager, check_device
    from .engine.models.precision import fast_dtype

    ckpt_dir, _ = _paths(args)
    full = args.no_half or args.precision == "full"
    dtype = torch.float32 if full else {"half": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    if dtype is None:  # auto
        dtype = fast_dtype(check_device(args.device))
    return PipelineManager(ckpt_dir, args.data_dir, device=args.device, dtype=dtype,
                           settings_path=args.data_dir / "config.json",
                           embeddings_dir=args.embeddings_dir, vae_dir=args.vae_dir,
                           vae_dtype=torch.float32 if (full or args.no_half_vae) else None,
                           offload="medvram" if args.medvram else "lowvram" if args.lowvram else "none",
                           lora_dir=args.lora_dir, nan_check=not args.disable_nan_check,
                           controlnet_dir=args.controlnet_dir, compile="inductor" if args.compile else None)


def _scripts(args, manager):
    """The built-in scripts and the enabled user extensions, their model-loaded callbacks on the manager."""
    from .scripts.extensions import load_scripts

    user_dir = None if args.disable_all_extensions else (args.extensions_dir or args.data_dir / "extensions")
    system = load_scripts(user_dir, set(manager.settings.disabled_extensions),
                          allow_install=args.enable_insecure_extension_access)
    system.connect(manager)
    for line in system.errors:
        print(f"warning: extension: {line}", file=sys.stderr)
    return system


def _script_job(args, manager, params, outdir, img2img=False, init=None, mask=None):
    """The job with --script (the always-on scripts run with their defaults: a plain CLI job runs none, so it
    needs no UI toolkit). Each picture's path is printed as it is saved; a script's grids at the end."""
    import json

    from .engine.errors import UserError
    from .scripts.jobs import run_job

    system = _scripts(args, manager)
    runner = system.runner(img2img)
    script_args = None
    if args.script or args.script_args:
        try:
            given = json.loads(args.script_args) if args.script_args else []
        except json.JSONDecodeError as e:
            raise UserError(f"--script-args is not JSON: {e}") from None
        if not isinstance(given, list):
            raise UserError("--script-args must be a JSON list, e.g. '[1, \"Euler, DDIM\"]'")
        if not args.script:
            raise UserError("--script-args needs --script NAME")
        script_args = runner.build_args(args.script, given, None)
    printed = set()

    def saved(path):
        printed.add(str(path))
        _print_path(path)
    processed = run_job(system, manager, params, outdir, args=script_args, init=init, mask=mask, img2img=img2img,
                        on_progress=ProgressBar(), on_saved=saved)
    for path in processed.paths:
        if str(path) not in printed:
            _print_path(path)
    return processed


def _print_path(path) -> None:
    print(path, flush=True)  # as soon as the file exists: a killed batch has printed every image it saved


class ProgressBar:
    """A tqdm bar of model evaluations on stderr, for a person watching a terminal (none when stderr is a file
    or a pipe: a script reading it gets only the paths on stdout and errors on stderr)."""

    def __init__(self, file=None, enabled: bool | None = None):
        self.file = file or sys.stderr
        self.enabled = self.file.isatty() if enabled is None else enabled
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.file, desc="Sampling", unit="step", leave=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(processed) -> int:
    for warning in processed.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def run_txt2img(argv: list[str]) -> int:
    args = txt2img_parser().parse_args(argv)
    _, outdir = _paths(args)
    manager, params = _manager(args), params_from_args(args)
    if not any(a.split("=")[0] in ("--width", "--height") for a in argv):
        # no size asked for: the size the checkpoint was trained at, where it says (the demo model: 64×64)
        width, height = manager.native_size(args.ckpt) or (params.width, params.height)
        params = params.replace(width=width, height=height)
    if args.script or args.script_args:
        return _report(_script_job(args, manager, params, outdir))
    return _report(manager.txt2img(params, outdir, on_saved=_print_path, on_progress=ProgressBar()))


def run_img2img(argv: list[str]) -> int:
    args = img2img_parser().parse_args(argv)
    from .engine.jobs.img2img import MAX_INIT_PIXELS
    from .engine.imaging.ops import open_image, open_mask, resize_mode_index

    init = open_image(args.init_image, MAX_INIT_PIXELS)
    mask = open_mask(args.mask, MAX_INIT_PIXELS) if args.mask else None
    params = params_from_args(args).replace(resize_mode=resize_mode_index(args.resize_mode))
    if args.scale is not None and not (0 < args.scale <= 8):  # also refuses nan, which no comparison passes
        from .engine.errors import UserError

        raise UserError(f"--scale must be a number above 0 and at most 8, got {args.scale}")
    if args.scale is not None:
        from .engine.imaging.ops import scale_to_size

        width, height = scale_to_size(*init.size, args.scale)
        _check_scaled_size(args.scale, init.size, (width, height))
        params = params.replace(width=width, height=height)
    _, outdir = _paths(args)
    manager = _manager(args)
    if args.script or args.script_args:
        return _report(_script_job(args, manager, params, outdir, img2img=True, init=init, mask=mask))
    return _report(manager.img2img(params, init, mask, outdir, on_saved=_print_path, on_progress=ProgressBar()))


def _check_scaled_size(scale: float, size: tuple[int, int], scaled: tuple[int, int]) -> None:
    """A size --scale made is blamed on --scale, not on a --width the user never gave."""
    from .engine.errors import UserError
    from .engine.params import SIZE_MAX, SIZE_MIN

    if not all(SIZE_MIN <= n <= SIZE_MAX for n in scaled):
        raise UserError(f"--scale {scale:g} makes the {size[0]}x{size[1]} init image {scaled[0]}x{scaled[1]}; "
                        f"width and height must be between {SIZE_MIN} and {SIZE_MAX}")


def run_extras(argv: list[str]) -> int:
    """A1111's Extras tab headless: upscale pictures, or every picture of a folder (Batch from directory),
    keeping their infotext; prints each saved path."""
    from .engine.imaging import upscalers
    from .engine.jobs.extras import SCALE_BY, SCALE_TO, ExtrasParams

    p = argparse.ArgumentParser(prog="webui extras", description=run_extras.__doc__)
    p.add_argument("images", nargs="*", type=Path, help="pictures to upscale (or --input-dir)")
    p.add_argument("--input-dir", type=Path, default=None,
                   help="upscale every picture in this folder, in name order; other files are skipped")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="save right in this folder (default: OUTDIR/extras-images/DATE/)")
    p.add_argument("--data-dir", type=Path, default=Path("."))
    p.add_argument("--outdir", type=Path, default=None, help="outputs root (default: DATA_DIR/outputs)")
    p.add_argument("--upscaler-1", default="Lanczos", help=f"one of {', '.join(upscalers.names())}")
    p.add_argument("--scale", type=float, default=None, help="scale by this factor (default 2)")
    p.add_argument("--width", type=int, default=None, help="scale to this width (with --height)")
    p.add_argument("--height", type=int, default=None, help="scale to this height (with --width)")
    p.add_argument("--no-crop", action="store_true", help="with --width/--height: keep the whole upscaled picture")
    p.add_argument("--upscaler-2", default=upscalers.NONE)
    p.add_argument("--upscaler-2-visibility", type=float, default=0.0)
    args = p.parse_args(argv)
    from .engine.errors import UserError
    from .engine.infotext import infotext_of_image
    from .engine.imaging.open import open_limited
    from .engine.jobs.extras import EXTRAS_MAX_SIDE, FolderSources
    from .engine.manager import PipelineManager

    if bool(args.images) == (args.input_dir is not None):
        raise UserError("give pictures to upscale or --input-dir, not both" if args.images else
                        "give pictures to upscale, or --input-dir with a folder of them")
    if (args.width is None) != (args.height is None):
        raise UserError("--width and --height go together")
    if args.width is not None and args.scale is not None:
        raise UserError("give --scale or --width/--height, not both")
    params = ExtrasParams(resize_mode=SCALE_TO if args.width else SCALE_BY,
                          upscaling_resize=2.0 if args.scale is None else args.scale,
                          upscaling_resize_w=args.width or 512, upscaling_resize_h=args.height or 512,
                          upscaling_crop=not args.no_crop, upscaler_1=args.upscaler_1, upscaler_2=args.upscaler_2,
                          extras_upscaler_2_visibility=args.upscaler_2_visibility).validate()
    sources = [] if args.input_dir is None else FolderSources(args.input_dir)
    for path in args.images:
        with open_limited(path, EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, f"Picture {path}") as image:
            image.load()
            sources.append((image.copy(), infotext_of_image(image)))
    outdir = args.outdir or args.data_dir / "outputs"
    manager = PipelineManager(args.data_dir / "models" / "Stable-diffusion", args.data_dir,
                              settings_path=args.data_dir / "config.json", device="cpu")
    processed = manager.extras(sources, params, outdir, output_dir=args.output_dir)
    for path in processed.paths:
        _print_path(path)
    for warning in processed.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


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
    """The UI (with the API when --api), or the API alone (--nowebui). Local only unless --listen."""
    args = launch_parser().parse_args(argv)
    from .api.auth import parse_credentials

    _, outdir = _paths(args)
    host = "0.0.0.0" if args.listen else "127.0.0.1"
    api_credentials, gradio_credentials = parse_credentials(args.api_auth), parse_credentials(args.gradio_auth)
    api = None
    if args.api or args.nowebui:
        from .api.routes import ApiConfig

        flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("api_auth", "gradio_auth")}  # /cmd-flags never shows a password
        api = ApiConfig(outdir, flags=flags, credentials=api_credentials, api_log=args.api_log)
    manager = _manager(args)
    scripts = _scripts(args, manager)
    if api is not None:
        api.scripts = scripts
    if args.nowebui:
        from .api.server import NOWEBUI_PORT, serve
        from .scripts import callbacks
        from .ui.app import preload

        if args.ckpt:
            manager.select(args.ckpt)
        else:
            preload(manager)
        serve(manager, api, host, args.port or NOWEBUI_PORT, cors=args.cors_allow_origins,
              on_app=lambda app: callbacks.run("app_started", None, app))
        return 0
    from .ui.app import launch

    launch(manager, outdir=outdir, checkpoint=args.ckpt, host=host, port=args.port or 7860, api=api,
           gradio_auth=list(gradio_credentials.items()) or None, cors=args.cors_allow_origins, scripts=scripts)
    return 0


def _command_first(argv: list[str]) -> list[str]:
    """`webui --data-dir X txt2img …` as `webui txt2img --data-dir X …`: common flags may come first."""
    if not argv or argv[0] in COMMANDS:
        return argv
    for i, arg in enumerate(argv):
        if arg in COMMANDS and not argv[i - 1].startswith("--prompt"):
            return [arg, *argv[:i], *argv[i + 1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _command_first(sys.argv[1:] if argv is None else list(argv))
    command = argv[0] if argv and argv[0] in COMMANDS else None
    runner = {"txt2img": run_txt2img, "img2img": run_img2img, "extras": run_extras,
              "make-tiny-model": run_make_tiny_model, None: run_ui}[command]
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
