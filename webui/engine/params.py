"""The one typed request that the UI, the CLI, the API and the infotext codec share.

Each field is declared once, with its label, bounds, infotext key and CLI flag (fields.param); validation,
the schema, the CLI flags, the infotext codec and the UI sliders are generated from these declarations.
Adding a field is one `name: type = param(...)` line here plus the code that uses the value."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import fields
from .fields import InvalidParams, param  # noqa: F401  (InvalidParams: imported from here by callers)

# A1111's UI limits (modules/ui.py); the same bounds guard the CLI and the API.
SIZE_MIN, SIZE_MAX, SIZE_STEP = 64, 2048, 8
STEPS_MAX = 150
CFG_MAX = 30.0
BATCH_SIZE_MAX = 8
BATCH_COUNT_MAX = 100
SEED_MAX = 2**32 - 1
CLIP_SKIP_MAX = 12
MASK_BLUR_MAX = 64
PADDING_MAX = 256
NOISE_MULTIPLIER_MAX = 1.5
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # inpainting_fill index → name
MASK_MODES = ("Inpaint masked", "Inpaint not masked")  # inpainting_mask_invert False / True
INPAINT_AREAS = ("Whole picture", "Only masked")  # inpaint_full_res False / True
RNG_SOURCES = ("CPU", "GPU")
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")

_SAMPLER, _IMG2IMG, _HIRES = "sampler", "img2img", "hires"  # CLI option groups (webui/cli.py)
HR_SCALE_MAX = 4.0


@dataclass
class GenerationParams:
    prompt: str = param("", label="Prompt", cli="--prompt")
    negative_prompt: str = param("", label="Negative prompt", cli="--negative-prompt")
    # A1111's API defaults differ from its UI's: 50 steps, and "Euler" when neither sampler_name nor the old
    # sampler_index is sent (webui/api/requests.py)
    steps: int = param(20, label="Sampling steps", noun="steps", minimum=1, maximum=STEPS_MAX, step=1,
                       infotext="Steps", cli="--steps", api_default=50)
    sampler_name: str = param("DPM++ 2M", label="Sampling method", infotext="Sampler", cli="--sampler",
                              api_default=None)
    scheduler: str = param("Automatic", label="Schedule type", infotext="Schedule type", cli="--scheduler",
                           api_default=None)
    cfg_scale: float = param(7.0, label="CFG Scale", noun="CFG scale", minimum=0.0, maximum=CFG_MAX, step=0.5,
                             infotext="CFG scale", cli="--cfg-scale")
    seed: int = param(-1, label="Seed", minimum=0, maximum=SEED_MAX, sentinel=-1, infotext="Seed", cli="--seed",
                      help="seed, -1 = random")
    # Width × height: infotext "Size: WxH" (infotext.py).
    width: int = param(512, label="Width", minimum=SIZE_MIN, maximum=SIZE_MAX, step=SIZE_STEP,
                       multiple_of=SIZE_STEP, cli="--width")
    height: int = param(512, label="Height", minimum=SIZE_MIN, maximum=SIZE_MAX, step=SIZE_STEP,
                        multiple_of=SIZE_STEP, cli="--height")
    batch_size: int = param(1, label="Batch size", minimum=1, maximum=BATCH_SIZE_MAX, step=1, cli="--batch-size")
    n_iter: int = param(1, label="Batch count", minimum=1, maximum=BATCH_COUNT_MAX, step=1, cli="--n-iter",
                        help="batch count")
    # Variation seed ("subseed"), A1111 semantics: noise = slerp(strength, noise(seed), noise(subseed)).
    # Both are written to infotext only when the strength is not 0 (infotext.py).
    subseed: int = param(-1, label="Variation seed", minimum=0, maximum=SEED_MAX, sentinel=-1,
                         infotext="Variation seed", cli="--subseed", help="variation seed, -1 = random")
    subseed_strength: float = param(0.0, label="Variation strength", minimum=0.0, maximum=1.0, step=0.01,
                                    infotext="Variation seed strength", cli="--subseed-strength",
                                    help="variation strength")
    # 0 = off; infotext "Seed resize from: WxH" when both are set (infotext.py). Not a multiple of 8: any size.
    # The API's -1 (A1111's API default) is off too: webui/api/requests.py reads it as 0.
    seed_resize_from_w: int = param(0, label="Resize seed from width", minimum=0, maximum=SIZE_MAX, step=SIZE_STEP,
                                    cli="--seed-resize-from-w", help="resize seed from width, 0 = off",
                                    api_default=-1)
    seed_resize_from_h: int = param(0, label="Resize seed from height", minimum=0, maximum=SIZE_MAX, step=SIZE_STEP,
                                    cli="--seed-resize-from-h", help="resize seed from height, 0 = off",
                                    api_default=-1)
    # Sampler knobs; None = the current setting (engine/settings.py). Infotext carries the values used.
    eta: float | None = param(None, label="Eta", minimum=0.0, maximum=1.0, infotext="Eta", cli="--eta",
                              cli_group=_SAMPLER,
                              help="eta for ancestral/SDE samplers")
    eta_ddim: float | None = param(None, label="Eta DDIM", minimum=0.0, maximum=1.0, infotext="Eta DDIM",
                                   cli="--eta-ddim", cli_group=_SAMPLER)
    s_churn: float | None = param(None, label="Sigma churn", minimum=0.0, maximum=100.0, infotext="Sigma churn",
                                  cli="--s-churn",
                                  cli_group=_SAMPLER)
    s_tmin: float | None = param(None, label="Sigma tmin", minimum=0.0, maximum=10.0, infotext="Sigma tmin",
                                 cli="--s-tmin", cli_group=_SAMPLER)
    s_tmax: float | None = param(None, label="Sigma tmax", minimum=0.0, maximum=999.0, infotext="Sigma tmax",
                                 cli="--s-tmax", cli_group=_SAMPLER)
    s_noise: float | None = param(None, label="Sigma noise", minimum=0.0, maximum=1.1, infotext="Sigma noise",
                                  cli="--s-noise",
                                  cli_group=_SAMPLER)
    # Bounded like a seed: it is added to one, and the sum seeds a torch generator.
    ensd: int | None = param(None, label="Eta noise seed delta", minimum=0, maximum=SEED_MAX, infotext="ENSD",
                             infotext_omit=(0,), cli="--ensd", cli_group=_SAMPLER, help="eta noise seed delta")
    rng: str | None = param(None, label="Random number generator source", noun="RNG source", choices=RNG_SOURCES,
                            infotext="RNG", infotext_omit=("GPU",), cli="--rng", cli_group=_SAMPLER,
                            help="random number source")
    sigma_min: float | None = param(None, label="Schedule min sigma", minimum=0.0, infotext="Schedule min sigma",
                                    cli="--sigma-min", cli_group=_SAMPLER)
    sigma_max: float | None = param(None, label="Schedule max sigma", minimum=0.0, infotext="Schedule max sigma",
                                    cli="--sigma-max", cli_group=_SAMPLER)
    rho: float | None = param(None, label="Schedule rho", minimum=0.0, infotext="Schedule rho", cli="--rho",
                              cli_group=_SAMPLER)
    # Written to infotext only above 1 (infotext.py).
    clip_skip: int | None = param(None, label="Clip skip", minimum=1, maximum=CLIP_SKIP_MAX, infotext="Clip skip",
                                  cli="--clip-skip", cli_group=_SAMPLER,
                                  help="stop CLIP this many layers from the end")
    # ToMe for SD on the UNet's self-attention (A1111's token merging): faster, slightly different pictures.
    # Written to infotext only when not 0; "hr" only with hires fix (infotext.py).
    token_merging_ratio: float | None = param(None, label="Token merging ratio", minimum=0.0, maximum=0.9,
                                              infotext="Token merging ratio", cli="--token-merging-ratio",
                                              cli_group=_SAMPLER, help="ToMe ratio of the sampling pass")
    token_merging_ratio_hr: float | None = param(None, label="Token merging ratio hr", minimum=0.0, maximum=0.9,
                                                 infotext="Token merging ratio hr", cli="--token-merging-ratio-hr",
                                                 cli_group=_SAMPLER, help="ToMe ratio of the hires pass")
    emphasis: str | None = param(None, label="Emphasis", choices=EMPHASIS_MODES, infotext="Emphasis",
                                 cli="--emphasis", cli_group=_SAMPLER, help="emphasis mode")
    # The checkpoint: a name, title, hash or path to load; on written infotext, the loaded model's name.
    # Its CLI flag is --ckpt, shared with the UI launcher (webui/cli.py).
    # On the API these are override_settings' sd_model_checkpoint and sd_vae, as in A1111.
    model: str | None = param(None, label="Stable Diffusion checkpoint", infotext="Model", on_api=False)
    model_hash: str | None = param(None, label="Model hash", infotext="Model hash", on_api=False)
    vae: str | None = param(None, label="SD VAE", infotext="VAE", cli="--vae",  # an external VAE's file name
                            help="Automatic, None or a VAE file name (default: the setting)", on_api=False)
    vae_hash: str | None = param(None, label="VAE hash", infotext="VAE hash", on_api=False)
    # img2img / inpainting (None = not used: not written to infotext); ui_default = A1111's UI default,
    # api_default A1111's API default where it differs (inpainting: fill, "Only masked", no padding).
    denoising_strength: float | None = param(None, label="Denoising strength", minimum=0.0, maximum=1.0, step=0.01,
                                             ui_default=0.75, infotext="Denoising strength",
                                             cli="--denoising-strength", cli_group=_IMG2IMG, api_default=0.75)
    # 0 Just resize, 1 Crop and resize, 2 Resize and fill, 3 Just resize (latent upscale): the names live with
    # the resizing code (imaging/ops.RESIZE_MODES), which the CLI and UI use for this field.
    resize_mode: int = param(0, label="Resize mode", minimum=0, maximum=3, cli_group=_IMG2IMG)
    mask_blur: int | None = param(None, label="Mask blur", minimum=0, maximum=MASK_BLUR_MAX, step=1, ui_default=4,
                                  infotext="Mask blur", infotext_omit=(0,), cli="--mask-blur", cli_group=_IMG2IMG,
                                  api_default=4)
    inpainting_mask_invert: bool = param(False, label="Mask mode", names=MASK_MODES, infotext="Mask mode",
                                         infotext_omit=(False,), cli="--invert-mask", cli_group=_IMG2IMG,
                                         help='mask mode "Inpaint not masked"')
    inpainting_fill: int | None = param(None, label="Masked content", names=MASKED_CONTENT, ui_default=1,
                                        infotext="Masked content", infotext_omit=(1,), cli="--masked-content",
                                        cli_group=_IMG2IMG, help="what the masked area starts from",
                                        api_default=0)
    inpaint_full_res: bool = param(False, label="Inpaint area", names=INPAINT_AREAS, infotext="Inpaint area",
                                   infotext_omit=(False,), cli="--only-masked", cli_group=_IMG2IMG,
                                   help='inpaint area "Only masked" (default: whole picture)', api_default=True)
    # Written to infotext only with "Only masked" (infotext.py).
    inpaint_full_res_padding: int | None = param(None, label="Only masked padding, pixels",
                                                 noun="only masked padding", minimum=0, maximum=PADDING_MAX, step=4,
                                                 ui_default=32, infotext="Masked area padding",
                                                 cli="--only-masked-padding", cli_group=_IMG2IMG, api_default=0)
    # Inpainting models; None = the setting's.
    inpainting_mask_weight: float | None = param(None, label="Conditional mask weight", minimum=0.0, maximum=1.0,
                                                 infotext="Conditional mask weight")
    initial_noise_multiplier: float | None = param(None, label="Noise multiplier for img2img",
                                                   noun="noise multiplier", minimum=0.0,
                                                   maximum=NOISE_MULTIPLIER_MAX, infotext="Noise multiplier",
                                                   infotext_omit=(1.0,), cli_group=_IMG2IMG)
    # Hires fix: txt2img's second pass (jobs/hires.py), A1111's fields and infotext keys. Nothing of it is written
    # or done without enable_hr; "Hires upscale" / "Hires resize" come from hr_scale / hr_resize_x, _y
    # (infotext.py), and a read infotext with them and "Denoising strength" turns enable_hr on.
    enable_hr: bool = param(False, label="Hires. fix", cli="--enable-hr", cli_group=_HIRES,
                            help="hires fix: upscale the picture, then sample it again")
    hr_upscaler: str | None = param(None, label="Upscaler", noun="hires upscaler", infotext="Hires upscaler",
                                    cli="--hr-upscaler", cli_group=_HIRES,
                                    help="a latent mode (Latent, Latent (bicubic), …) or Lanczos, Nearest, None; "
                                         "default Latent")
    hr_second_pass_steps: int = param(0, label="Hires steps", minimum=0, maximum=STEPS_MAX, step=1,
                                      infotext="Hires steps", infotext_omit=(0,), cli="--hr-second-pass-steps",
                                      cli_group=_HIRES, help="hires steps, 0 = as many as the first pass")
    hr_scale: float = param(2.0, label="Upscale by", noun="hires upscale", minimum=1.0, maximum=HR_SCALE_MAX,
                            step=0.05, cli="--hr-scale", cli_group=_HIRES)
    hr_resize_x: int = param(0, label="Resize width to", noun="hires resize width", minimum=0, maximum=SIZE_MAX,
                             step=SIZE_STEP, cli="--hr-resize-x", cli_group=_HIRES,
                             help="hires width, 0 = from the height or Upscale by")
    hr_resize_y: int = param(0, label="Resize height to", noun="hires resize height", minimum=0, maximum=SIZE_MAX,
                             step=SIZE_STEP, cli="--hr-resize-y", cli_group=_HIRES,
                             help="hires height, 0 = from the width or Upscale by")
    hr_checkpoint_name: str | None = param(None, label="Hires checkpoint", infotext="Hires checkpoint",
                                           cli="--hr-checkpoint", cli_group=_HIRES)
    hr_sampler_name: str | None = param(None, label="Hires sampling method", infotext="Hires sampler",
                                        cli="--hr-sampler", cli_group=_HIRES, help="default: the first pass's")
    hr_scheduler: str | None = param(None, label="Hires schedule type", infotext="Hires schedule type",
                                     cli="--hr-scheduler", cli_group=_HIRES, help="default: the first pass's")
    hr_prompt: str = param("", label="Hires prompt", infotext="Hires prompt", infotext_omit=("",),
                           cli="--hr-prompt", cli_group=_HIRES, help="default: the prompt")
    hr_negative_prompt: str = param("", label="Hires negative prompt", infotext="Hires negative prompt",
                                    infotext_omit=("",), cli="--hr-negative-prompt", cli_group=_HIRES,
                                    help="default: the negative prompt")
    # A1111's styles (styles.csv), applied to the prompts when the job starts (manager.py): the infotext holds the
    # styled prompts, from which a paste finds the styles again (prompts/styles.py).
    styles: list[str] = param(default_factory=list, label="Styles", help="styles.csv names, applied in order")
    # Infotext fields this version does not model, verbatim and in order (e.g. "Hires upscale", "Version").
    extra: dict[str, str] = param(default_factory=dict, label="Other infotext fields",
                                  help="infotext fields this version does not model, written back verbatim",
                                  on_api=False)

    def replace(self, **changes) -> GenerationParams:
        changes.setdefault("extra", dict(self.extra))
        return dataclasses.replace(self, **changes)

    def validate(self) -> GenerationParams:
        """Raise InvalidParams with a message a user can act on; return self for chaining."""
        fields.validate(self)
        return self

    @classmethod
    def schema(cls) -> dict:
        """{field name: {type, default, minimum, maximum, choices, label, help, api, ...}} (fields.schema)."""
        return fields.schema(cls)
