"""User settings (A1111's option names), the defaults every request falls back to.

A request field left at None takes the value here; infotext records the values actually used, so a pasted
infotext regenerates the same picture whatever the settings are. Each setting is declared with its bounds
(fields.param), like the request fields: PipelineManager.update_settings refuses a value outside them, so a bad
setting is never stored."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import param
from .imaging.previews import PREVIEW_METHODS
from .params import CLIP_SKIP_MAX, EMPHASIS_MODES, NOISE_MULTIPLIER_MAX, SEED_MAX

RNG_SOURCES = ("CPU", "GPU")
QUICKSETTINGS_DEFAULT = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")  # A1111 1.10


@dataclass
class Settings:
    sd_checkpoints_limit: int = param(1, label="Maximum number of checkpoints loaded at the same time",
                                      noun="checkpoints kept in RAM", minimum=1, maximum=10)
    # LoRA files kept parsed in RAM per loaded model (A1111's default is 0)
    lora_in_memory_limit: int = param(4, label="Number of LoRA files to keep parsed in memory",
                                      noun="LoRA files kept in memory", minimum=0, maximum=20)
    sd_vae: str = param("Automatic", label="SD VAE")  # "Automatic", "None" or a file in models/VAE
    cross_attention_optimization: str = param("Automatic", label="Cross attention optimization")
    CLIP_stop_at_last_layers: int = param(1, label="Clip skip", minimum=1, maximum=CLIP_SKIP_MAX)
    emphasis: str = param("Original", label="Emphasis", choices=EMPHASIS_MODES)
    eta_ancestral: float = param(1.0, label="Eta for k-diffusion samplers", noun="eta", minimum=0.0, maximum=1.0)
    eta_ddim: float = param(0.0, label="Eta for DDIM", noun="eta DDIM", minimum=0.0, maximum=1.0)
    s_churn: float = param(0.0, label="sigma churn", minimum=0.0, maximum=100.0)
    s_tmin: float = param(0.0, label="sigma tmin", minimum=0.0, maximum=10.0)
    s_tmax: float = param(0.0, label="sigma tmax", minimum=0.0, maximum=999.0)  # 0 = infinity, as A1111
    s_noise: float = param(1.0, label="sigma noise", minimum=0.0, maximum=1.1)
    eta_noise_seed_delta: int = param(0, label="Eta noise seed delta", noun="ENSD", minimum=0, maximum=SEED_MAX)
    # CPU noise is the same on every machine; "GPU" reproduces A1111's default on CUDA machines.
    randn_source: str = param("CPU", label="Random number generator source", noun="RNG source",
                              choices=RNG_SOURCES)
    sigma_min: float = param(0.0, label="sigma min", minimum=0.0)  # 0 = the model's
    sigma_max: float = param(0.0, label="sigma max", minimum=0.0)
    rho: float = param(0.0, label="rho", minimum=0.0)  # 0 = the schedule's default
    always_discard_next_to_last_sigma: bool = param(False, label="Always discard next-to-last sigma")
    beta_dist_alpha: float = param(0.6, label="Beta schedule alpha", minimum=0.01, maximum=1.0)
    beta_dist_beta: float = param(0.6, label="Beta schedule beta", minimum=0.01, maximum=1.0)
    # token merging (tomesd): 0 = off; img2img / hires fix use theirs when not 0, else the first
    token_merging_ratio: float = param(0.0, label="Token merging ratio", minimum=0.0, maximum=0.9)
    token_merging_ratio_img2img: float = param(0.0, label="Token merging ratio for img2img", minimum=0.0,
                                               maximum=0.9)
    token_merging_ratio_hr: float = param(0.0, label="Token merging ratio for high-res pass", minimum=0.0,
                                          maximum=0.9)
    # img2img
    img2img_fix_steps: bool = param(False, label="With img2img, do exactly the amount of steps the slider specifies")
    initial_noise_multiplier: float = param(1.0, label="Noise multiplier for img2img", noun="noise multiplier",
                                            minimum=0.0, maximum=NOISE_MULTIPLIER_MAX)
    inpainting_mask_weight: float = param(1.0, label="Inpainting conditioning mask strength",
                                          noun="conditional mask weight", minimum=0.0, maximum=1.0)
    # transparent init images are flattened onto it
    img2img_background_color: str = param("#ffffff", label="img2img background color")
    # the server refuses a request body (an upload included) bigger than this, before reading it all
    upload_limit_mb: int = param(50, label="Upload size limit (MB)", noun="upload size limit", minimum=1,
                                 maximum=4096)
    # jobs waiting or running in the one queue (UI and API alike); one more is refused (the API answers 503)
    queue_limit: int = param(64, label="Maximum number of jobs in the queue", noun="queue limit", minimum=1,
                             maximum=10000)
    live_previews_enable: bool = param(True, label="Show live previews of the created image")
    # A1111's default; 0 or less: no preview while sampling. "Approx cheap" (the family's latent → RGB factors).
    show_progress_every_n_steps: int = param(10, label="Live preview display period (sampling steps)",
                                             noun="live preview period", minimum=-1, maximum=100)
    # "TAESD" needs models/VAE-approx/taesd_decoder.pth (taesdxl_decoder.pth for SDXL); "Full": a VAE decode
    show_progress_type: str = param("Approx cheap", label="Live preview method", choices=PREVIEW_METHODS)
    # saved and API-returned pictures: PNG with its `parameters` chunk, JPEG / WebP with EXIF UserComment
    samples_format: str = param("png", label="File format for images", noun="image format",
                                choices=("png", "jpg", "webp"))
    save_txt: bool = param(False, label="Create a text file with infotext next to every generated image")
    # A1111's quicksettings bar beside the checkpoint: the settings named here, changed there at once. Read when the
    # UI is built (a change shows after a restart, as A1111's "requires UI reload"); a name not known is skipped.
    quicksettings_list: list[str] = param(default_factory=lambda: list(QUICKSETTINGS_DEFAULT),
                                          label="Quicksettings list")
    # saved pictures' names (imaging/filenames.py lists the [tags]); "" = [seed], or [seed]-[prompt_spaces] when
    # save_to_dirs is off, as A1111
    samples_filename_pattern: str = param("", label="Images filename pattern")
    save_images_add_number: bool = param(True, label="Add number to filename when saving")
    save_to_dirs: bool = param(True, label="Save images to a subdirectory")
    directories_filename_pattern: str = param("[date]", label="Directory name pattern")  # "" = [prompt_words]
    # a job of several pictures also saves them as one grid, outputs/<tab>-grids/DATE/grid-NNNN.png (A1111's)
    grid_save: bool = param(True, label="Always save all generated image grids")
    n_rows: int = param(-1, label="Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
                        noun="grid row count", minimum=-1, maximum=16)
    grid_prevent_empty_spots: bool = param(False, label="Prevent empty spots in grid (when set to autodetect)")
    # sd-webui-controlnet's: units per tab (read when the UI is built), ControlNets kept loaded (LRU), and
    # whether the detected maps are left out of the results (the extension appends them after the pictures)
    control_net_unit_count: int = param(3, label="Multi-ControlNet: ControlNet unit number", noun="ControlNet unit "
                                        "number", minimum=1, maximum=10)
    control_net_model_cache_size: int = param(2, label="Model cache size", noun="ControlNet model cache size",
                                              minimum=1, maximum=10)
    control_net_no_detectmap: bool = param(False, label="Do not append detectmap to output")
    # extensions (by folder name) the Extensions tab switched off; read at start-up, as A1111
    disabled_extensions: list[str] = param(default_factory=list, label="Disabled extensions")

    def validate(self) -> Settings:
        from .fields import validate

        validate(self)
        return self
