"""PipelineManager: the single owner of the loaded model. Every tab, the API and the CLI go through it."""
from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import jobs
from . import models as architecture
from .errors import UserError
from .imaging import saving as images
from .imaging.upscaler_models import UpscalerModels
from .jobs.resolve import resolve
from .models import attention, compiled
from .models.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    HashCache,
    check_vae_finite,
    list_checkpoints,
    native_size,
    read_state_dict,
    resolve_checkpoint,
    short_hash,
)
from .models.precision import default_dtype
from .models.vae import VAEInfo, list_vaes, load_vae, resolve_vae
from .infotext import format_infotext
from .lora.activation import ModelLoras, lora_requests
from .lora.library import LoraLibrary
from .params import GenerationParams
from .patches import JobPatches
from .prompts.embeddings import EmbeddingDatabase
from .prompts.conditioning import prompt_token_count
from .prompts.parser import extract_extra_networks
from .prompts.text import clean_prompt
from .prompts.encoder import PromptEncoder
from .prompts.styles import StyleDatabase
from .settings import Settings
from . import settings_file
from .tasks import JobQueue, TaskState
from .samplers.denoiser import DiscreteEpsDenoiser, alphas_cumprod

log = logging.getLogger(__name__)


class NoCheckpoint(UserError):
    pass


@dataclass
class LoadedModel:
    info: CheckpointInfo
    hashes: HashCache  # the file is hashed on first use, not on load: hashing 2-7 GB costs as much as reading it
    components: architecture.Components
    denoiser: DiscreteEpsDenoiser
    encoder: PromptEncoder
    baked_vae: torch.nn.Module = None  # the checkpoint's own VAE, kept while an external one is in use
    vae_info: VAEInfo | None = None  # the external VAE in use, None = baked-in
    vae_sha256: str | None = None
    attention: str | None = None  # the attention mode its modules currently use
    offload_hooks: list | None = None  # --medvram / --lowvram: accelerate hooks moving modules on use
    loras: ModelLoras | None = None  # the LoRAs merged into its weights, with their backups

    @property
    def sha256(self) -> str:
        return self.hashes.sha256(self.info.path)

    @property
    def short_hash(self) -> str:
        return short_hash(self.sha256)

    @property
    def title(self) -> str:
        return f"{self.info.name} [{self.short_hash}]"


@dataclass
class Processed:
    """A finished job: images with their params, infotexts and saved paths (one entry per image)."""
    images: list
    params: list[GenerationParams]
    infotexts: list[str]
    paths: list[Path]
    interrupted: bool = False
    extra_networks: list = field(default_factory=list)  # <lora:…> and other tags found in the prompts
    warnings: list[str] = field(default_factory=list)  # for the user: e.g. LoRA keys that matched nothing
    task_id: str | None = None  # its id in the job queue
    format: str = "png"  # the file format its pictures are saved and sent in (samples_format)
    save_txt: bool = False  # each saved picture gets its infotext beside it as a .txt (A1111's save_txt)
    grid_path: Path | None = None  # a job of several pictures: their grid, saved (the grid_save setting)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str | torch.device | None) -> torch.device:
    """The device a user asked for, or a clear UserError: an unknown name, or one this torch build or machine
    does not have (`--device cuda` on a CPU-only torch), never a traceback from deep inside a job."""
    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"unknown device {str(name)!r}: use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if device.type not in available:
        raise UserError(f"unsupported device {str(name)!r}: use cpu, cuda, cuda:N or mps")
    if not available[device.type]():
        build = "this torch build has no CUDA" if device.type == "cuda" and torch.version.cuda is None else \
            "none is available"
        raise UserError(f"device {str(name)!r} cannot be used: {build}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {str(name)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device


class PipelineManager:
    def __init__(self, ckpt_dir: Path, data_dir: Path = Path("."), device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, embeddings_dir: Path | None = None, vae_dir: Path | None = None,
                 vae_dtype: torch.dtype | None = None, offload: str = "none", lora_dir: Path | None = None,
                 nan_check: bool = True, settings_path: Path | None = None, controlnet_dir: Path | None = None,
                 compile: str | object | None = None):
        """offload: "none"; "medvram" (each of text encoder, UNet, VAE moved to the device only while it runs);
        "lowvram" (as medvram, and the UNet's submodules one at a time: least memory, slowest).
        nan_check: stop a job whose latent turns NaN/inf rather than save a black picture (--disable-nan-check).
        settings_path: config.json to read the settings from and save every change to (None: not saved).
        compile: a torch.compile backend ("inductor" for --compile) to compile each loaded model's UNet and VAE
        decoder with (models/compiled.py); None: eager."""
        self.ckpt_dir = Path(ckpt_dir)
        self.vae_dir = Path(vae_dir or Path(data_dir) / "models" / "VAE")
        self.vae_approx_dir = Path(data_dir) / "models" / "VAE-approx"  # TAESD preview decoders
        self.controlnet_dir = Path(controlnet_dir or Path(data_dir) / "models" / "ControlNet")
        self.hashes = HashCache(Path(data_dir) / "cache.json")
        self.loras = LoraLibrary(Path(lora_dir or Path(data_dir) / "models" / "Lora"), self.hashes)
        self.upscaler_models = UpscalerModels(Path(data_dir) / "models")  # ESRGAN/, RealESRGAN/, SwinIR/, …
        self.embeddings = EmbeddingDatabase(Path(embeddings_dir or Path(data_dir) / "embeddings"), self.hashes)
        self.styles = StyleDatabase(Path(data_dir) / "styles.csv")
        self.device = check_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.vae_dtype = vae_dtype or self.dtype  # --no-half-vae keeps the VAE in fp32
        if offload not in ("none", "medvram", "lowvram"):
            raise ValueError(f"offload must be none, medvram or lowvram, got {offload!r}")
        self.offload = offload
        self.nan_check = nan_check
        if compile is not None and offload == "lowvram":
            log.warning("--compile is not used with --lowvram (its per-submodule moves break the graphs)")
            compile = None
        self.compile = compile
        # Loaded checkpoints by path, least recently used first; the active one is last.
        self.cache: OrderedDict[Path, LoadedModel] = OrderedDict()
        self.settings_path = Path(settings_path) if settings_path else None
        # replaced, never changed in place, by update_settings; other_settings: config.json keys we do not model
        self.settings, self.other_settings = settings_file.read(self.settings_path) if self.settings_path else \
            (Settings(), {})
        self._settings_lock = threading.Lock()  # not the job lock: Apply must not wait for a running job
        self.lock = threading.RLock()  # one job on the device at a time
        # every job waits its turn here, first come first served (tasks.py); the device lock is taken inside
        self.queue = JobQueue(lambda: self.settings.queue_limit)
        self.current: LoadedModel | None = None
        # A1111's sd_model_checkpoint: the checkpoint a job that names none uses (select() sets it; a job naming
        # another one does not change it). It survives Unload, so the next such job reloads it, as A1111 does.
        self.selected: CheckpointInfo | None = None
        self._bare_encoder: PromptEncoder | None = None  # token counting before any model is loaded
        # called with each LoadedModel as it is built (the Script API's on_model_loaded); an error in one is
        # logged, never a failed load
        self.model_listeners: list[Callable[[LoadedModel], None]] = []

    def list_checkpoints(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.ckpt_dir)

    def load(self, query: str) -> LoadedModel:
        """Load a checkpoint by name, title, hash or path and make it the one jobs that name none use; on any
        error the previous model stays loaded. Up to `settings.sd_checkpoints_limit` models stay in RAM:
        switching back to one reads nothing."""
        model = self._load(query)
        self.selected = model.info
        return model

    def _load(self, query: str) -> LoadedModel:
        """Load for one job (a request naming its checkpoint, an API override): the default stays."""
        info = resolve_checkpoint(query, self.ckpt_dir, self.hashes)
        with self.lock:
            if self.current is not None and self.current.info.path == info.path:
                return self.current
            loaded = self.cache.get(info.path) or self._build(info)
            self._activate(loaded)
            self._evict()
            return loaded

    def _build(self, info: CheckpointInfo) -> LoadedModel:
        if info.path.is_dir():
            components = architecture.build_components_from_folder(info.path, device="cpu", dtype=self.dtype,
                                                                   vae_dtype=self.vae_dtype)
            arch = components.arch
        else:
            state_dict = read_state_dict(info.path, self.dtype)
            check_vae_finite(state_dict, info.name)
            arch = architecture.detect(state_dict, architecture.sidecar_yaml(info.path))
            try:
                components = architecture.build_components(state_dict, arch, device="cpu", dtype=self.dtype,
                                                           vae_dtype=self.vae_dtype)
            except (RuntimeError, ValueError, TypeError, KeyError) as e:
                if isinstance(e, (UserError, torch.OutOfMemoryError)):
                    raise
                # tensors of the right names and shapes but unusable (integer dtypes, …): a broken file
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise CheckpointError(f"cannot load {info.name}: it is not a usable checkpoint "
                                      f"({type(e).__name__}: {first[:300]})") from e
            del state_dict
        torch.nn.Module.to(components.vae, dtype=self.vae_dtype)  # nn.Module.to: diffusers' warns on casts
        if self.compile is not None:
            compiled.compile_components(components, self.compile)
        denoiser = DiscreteEpsDenoiser(components.unet, alphas_cumprod(arch.scheduler_config), arch.prediction_type)
        loaded = LoadedModel(info, self.hashes, components, denoiser, self._text_side(components),
                             baked_vae=components.vae, loras=ModelLoras(components))
        log.info("loaded %s (%s)", info.name, arch.name)  # not .title: that would hash the file now
        for listener in self.model_listeners:
            try:
                listener(loaded)
            except Exception:
                log.exception("a model-loaded callback failed for %s", info.name)
        return loaded

    def _text_side(self, parts: architecture.Components):
        """The prompt encoder(s) the family uses, on the hidden state its UNet was trained on."""
        return parts.arch.model_family.prompt_encoder(parts, self.embeddings)

    def _activate(self, model: LoadedModel):
        """Make `model` the one on the device; the previous one goes back to RAM (a no-op on CPU)."""
        if self.current is not None and self.device.type != "cpu":
            if self.current.offload_hooks:
                for hook in self.current.offload_hooks:
                    hook.offload()
            else:
                self._move(self.current, torch.device("cpu"))
        if self.offload == "none":
            self._move(model, self.device)
        elif model.offload_hooks is None:
            model.offload_hooks = self._install_offload(model)
        self.cache[model.info.path] = model
        self.cache.move_to_end(model.info.path)
        self.current = model
        # embeddings must match this text encoder's width, so they are re-read for each model
        if model.components.text_encoder is not None:
            self.embeddings.load(model.components.tokenizer, model.components.text_encoder.config.hidden_size)
        model.encoder.clear_cache()

    def _install_offload(self, model: LoadedModel) -> list:
        """A1111's --medvram/--lowvram with accelerate's hooks: weights live in RAM and visit the device."""
        from accelerate import cpu_offload, cpu_offload_with_hook

        parts = model.components
        modules = [m for m in (parts.text_encoder, parts.text_encoder_2, parts.unet, parts.vae) if m is not None]
        hooks, previous = [], None
        for module in modules:
            if self.offload == "lowvram" and module is parts.unet:
                cpu_offload(module, execution_device=self.device)
            else:  # a whole module at a time; the previous one leaves when the next one starts
                module, previous = cpu_offload_with_hook(module, self.device, prev_module_hook=previous)
                hooks.append(previous)
        return hooks

    @staticmethod
    def _move(model: LoadedModel, device: torch.device):
        parts = model.components
        for module in {id(m): m for m in (parts.unet, parts.text_encoder, parts.text_encoder_2, parts.vae,
                                          model.baked_vae)
                       if m is not None}.values():
            torch.nn.Module.to(module, device)

    def _evict(self, force_collect: bool = False):
        limit = max(1, int(self.settings.sd_checkpoints_limit))
        evicted = force_collect
        while len(self.cache) > limit:
            path, model = next(iter(self.cache.items()))
            if model is self.current:
                break
            del self.cache[path]
            evicted = True
            log.info("unloaded %s", model.info.name)
        if evicted:  # a collection costs ~0.25 s: only when something was let go
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def select(self, query: str) -> LoadedModel:
        """A1111's checkpoint dropdown / `sd_model_checkpoint` option: load it and make it the checkpoint jobs
        that name none use. On an error nothing changes."""
        model = self.load(query)
        self.selected = model.info
        if self.settings_path is not None:
            with self._settings_lock:
                self.other_settings["sd_model_checkpoint"] = model.info.name
                settings_file.write(self.settings_path, self.settings, self.other_settings)
        return model

    def unload(self):
        """A1111's "Unload checkpoint": drop every loaded model and free its memory."""
        with self.lock:
            if self.current is not None and self.selected is None:
                self.selected = self.current.info
            self.current = None
            self.cache.clear()
            self._evict(force_collect=True)

    # ------------------------------------------------------------------ VAE and attention

    def list_vaes(self) -> list[VAEInfo]:
        return list_vaes(self.vae_dir)

    def _apply_vae(self, model: LoadedModel, choice: str):
        """Swap only the VAE: "None" = the checkpoint's own, "Automatic", or a file in models/VAE."""
        info = resolve_vae(choice, model.info, self.vae_dir)
        if info == model.vae_info:
            return
        if info is None:
            model.components.vae = model.baked_vae
        else:
            vae = load_vae(info, model.baked_vae)
            model.components.vae = torch.nn.Module.to(vae, self.device, self.vae_dtype)
        model.vae_info = info
        model.vae_sha256 = self.hashes.sha256(info.path) if info else None
        model.attention = None  # the new VAE module needs its processors set

    def _apply_attention(self, model: LoadedModel, settings: Settings):
        mode = settings.cross_attention_optimization
        if model.attention != mode:
            attention.apply(mode, model.components.unet, model.components.vae)
            model.attention = mode

    def ensure_model(self, query: str | None) -> LoadedModel:
        if query:
            return self._load(query)
        if self.selected is not None and self.selected.path.exists():
            return self._load(str(self.selected.path))
        if self.current is None:
            stored = self.other_settings.get("sd_model_checkpoint")  # config.json's, from the last session
            if isinstance(stored, str) and stored:
                try:
                    return self.select(stored)
                except UserError as e:
                    log.warning("the checkpoint config.json names cannot be loaded: %s", e)
            found = self.list_checkpoints()
            if not found:
                raise NoCheckpoint(
                    f"no checkpoint loaded: put a .safetensors or .ckpt Stable Diffusion model in {self.ckpt_dir} "
                    f"(or create a tiny one with `webui make-tiny-model {self.ckpt_dir / 'tiny.safetensors'}`)")
            try:
                return self.load(str(found[0].path))
            except UserError as e:  # the user chose nothing: say which file was tried, and why it failed
                raise NoCheckpoint(f"no checkpoint chosen, and the first one in {self.ckpt_dir}, {found[0].name}, "
                                   f"cannot be loaded: {e}. Choose a checkpoint.") from e
        return self.current

    def native_size(self, query: str | None) -> tuple[int, int] | None:
        """The size the checkpoint `query` (None: the one a job without a named checkpoint would use) says it
        was trained at, if it says; never loads the model."""
        try:
            if query:
                info = resolve_checkpoint(query, self.ckpt_dir, self.hashes)
            elif self.current is not None:
                info = self.current.info
            else:
                found = self.list_checkpoints()
                info = self.selected or (found[0] if found else None)
        except UserError:
            return None
        return native_size(info.path) if info is not None else None

    def token_count(self, prompt: str, steps: int) -> tuple[int, int]:
        """(tokens, counter target) for the prompt box, with the loaded model's embeddings when there is one."""
        if self.current is not None:
            encoder = self.current.encoder
        else:
            if self._bare_encoder is None:
                from transformers import CLIPTokenizer

                tokenizer = CLIPTokenizer.from_pretrained(str(architecture.make_architecture().tokenizer_dir),
                                                          local_files_only=True)
                self._bare_encoder = PromptEncoder(tokenizer, None)
            encoder = self._bare_encoder
        return prompt_token_count(encoder, clean_prompt(prompt)[0], max(1, int(steps)))

    def refresh_embeddings(self) -> bool:
        """Re-scan embeddings/ if it changed; cached conditionings are dropped when it did."""
        if self.current is None:
            return False
        with self.lock:
            text_encoder = self.current.components.text_encoder
            changed = self.embeddings.reload_if_changed(self.current.components.tokenizer,
                                                        text_encoder.config.hidden_size)
            if changed:
                self.current.encoder.clear_cache()
            return changed

    def _apply_loras(self, model: LoadedModel, prompt: str, settings: Settings):
        """Merge the positive prompt's <lora:…> tags into the model (A1111 reads only the positive prompt);
        unchanged tags cost nothing. Raises LoraError, with the model as it was, on a missing or unfit file."""
        _, tags = extract_extra_networks(prompt)
        activation = model.loras.activate(self.loras, lora_requests(tags), settings.lora_in_memory_limit)
        if activation.text_changed:
            model.encoder.clear_cache()
        return activation

    def interrupt(self):
        """Stop the running job (whoever queued it); the images it finished are kept."""
        self.queue.interrupt()

    def skip(self):
        """Drop the batch the running job is sampling and go on with its next one."""
        self.queue.skip()

    def update_settings(self, **changes) -> Settings:
        """Apply settings (the UI's Apply button, the VAE dropdown) at once, all together: a job in progress keeps
        the snapshot it started with, the next one sees every change. Unknown names and values outside a
        setting's declared bounds are refused (InvalidParams names the setting and the range)."""
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UserError(f"unknown setting(s): {', '.join(unknown)}")
        with self._settings_lock:
            # checked whole before it is stored: a refused value leaves every setting as it was
            self.settings = dataclasses.replace(self.settings, **changes).validate()
            if self.settings_path is not None:
                settings_file.write(self.settings_path, self.settings, self.other_settings)
            return self.settings

    def _apply_styles(self, params: GenerationParams) -> tuple[GenerationParams, list[str]]:
        """The request with its styles merged into its prompts (and the hires prompts it sets), as A1111's
        process_images; a style not in styles.csv is skipped with a warning."""
        if not params.styles:
            return params, []
        prompt, negative, missing = self.styles.apply(params.prompt, params.negative_prompt, params.styles)
        changes = dict(prompt=prompt, negative_prompt=negative, styles=[])
        if params.hr_prompt or params.hr_negative_prompt:
            hr_prompt, hr_negative, _ = self.styles.apply(params.hr_prompt or params.prompt,
                                                          params.hr_negative_prompt or params.negative_prompt,
                                                          params.styles)
            changes.update(hr_prompt=hr_prompt, hr_negative_prompt=hr_negative)
        warnings = [f"style {name!r} is not in {self.styles.path.name}: skipped" for name in missing]
        return params.replace(**changes), warnings

    def _control(self, task: TaskState, model: LoadedModel, settings: Settings, on_progress, keep_image):
        """The job's controls, wired to its queue task: Interrupt / Skip, the step counts and the live preview."""
        latent_format = model.components.arch.model_family.latent

        def on_batch(index, batches):
            task.job_no, task.job_count, task.sampling_step, task.skipped = index, batches, 0, False

        every = settings.show_progress_every_n_steps
        preview = self._preview_method(model, settings) if settings.live_previews_enable and every > 0 else None

        def on_step(step, steps, latents):
            task.sampling_step, task.sampling_steps = step, steps
            wanted = preview is not None and (step % every == 0 or step == steps)
            if wanted and latents.shape[1] == latent_format.channels:
                task.set_preview(preview(latents[0].float()))

        return jobs.JobControl(on_progress, lambda: task.interrupted, on_image=keep_image, nan_check=self.nan_check,
                               skipped=lambda: task.skipped, on_batch=on_batch, on_step=on_step)

    def _preview_method(self, model: LoadedModel, settings: Settings):
        """latent → (3, h, w) RGB in [-1, 1] by the Live preview method; TAESD without its file here (or with a
        broken one) falls back to the cheap factors, with one line in the log."""
        from .imaging import previews

        latent_format = model.components.arch.model_family.latent
        if settings.show_progress_type == "Full":
            vae = model.components.vae
            return lambda latent: previews.full_preview(vae, latent.to(vae.device, vae.dtype))
        if settings.show_progress_type == "TAESD":
            path = previews.find(self.vae_approx_dir, latent_format.taesd)
            try:
                if path is None:
                    raise UserError(f"no {latent_format.taesd}_decoder.pth in {self.vae_approx_dir}")
                decoder = previews.load(path)
                return lambda latent: previews.taesd_preview(decoder, latent)
            except UserError as e:
                log.warning("TAESD live preview unavailable, using Approx cheap: %s", e)
        return latent_format.preview

    def settings_snapshot(self) -> Settings:
        with self._settings_lock:
            return dataclasses.replace(self.settings)

    def txt2img(self, params: GenerationParams, outdir: Path | None, on_progress=None, on_saved=None,
                task: JobOptions | None = None) -> Processed:
        """Generate and (when outdir is given) save under outdir/txt2img-images/DATE/, each image as soon as it
        is decoded; on_saved(path) is called right after each file exists. `task`: its queue id and settings
        overrides (the API's force_task_id and override_settings)."""
        return self._generate(params, outdir, "txt2img-images", on_progress, on_saved=on_saved, options=task)

    def img2img(self, params: GenerationParams, init_image, mask=None, outdir: Path | None = None,
                on_progress=None, on_saved=None, task: JobOptions | None = None) -> Processed:
        """img2img (no mask) or inpainting (mask: white = regenerate) from a PIL image; saved under
        outdir/img2img-images/DATE/. Unset img2img fields take A1111's UI defaults (strength 0.75, mask blur 4,
        masked content "original", whole picture, padding 32)."""
        if init_image is None:
            raise UserError("img2img needs an init image")

        def prepare(model, request, settings):
            from .jobs import img2img

            return img2img.prepare(model.components, request, settings, init_image, mask)
        return self._generate(params, outdir, "img2img-images", on_progress, prepare, on_saved, task)

    def extras(self, sources: list, params, outdir: Path | None, task_id: str | None = None,
               output_dir: Path | None = None) -> Processed:
        """Extras (jobs/extras.py) for each (picture, its infotext or None) in `sources`, in the job queue like
        every job; saved under outdir/extras-images/DATE/ with the source's infotext and A1111's
        `postprocessing` text. Processed.infotexts holds the postprocessing texts. `sources` may be a
        jobs.extras.FolderSources (Batch from directory): its skipped files become Processed.warnings.
        `output_dir`: Batch from directory's output folder, the pictures saved right in it (A1111)."""
        from .infotext import parse_infotext
        from .jobs import extras

        params.validate(self.upscaler_models)  # before queueing: a mistake costs no wait
        processed = Processed([], [], [], [])
        with self.queue.task(task_id, "extras") as task:
            processed.task_id, processed.format = task.id, self.settings.samples_format
            task.job_count = len(sources)
            for index, (image, infotext) in enumerate(sources):
                if task.interrupted:
                    processed.interrupted = True
                    break
                task.job_no = index
                result, text = extras.run(image, params, self.upscaler_models)
                processed.images.append(result)
                processed.infotexts.append(text)
                if outdir is not None or output_dir is not None:
                    source = parse_infotext(infotext) if infotext else None
                    seed = source.seed if source is not None and source.seed != -1 else None
                    path = images.save_image(result, Path(output_dir or Path(outdir) / "extras-images"), seed,
                                             infotext, fmt=processed.format, texts={"postprocessing": text},
                                             naming=images.Naming(source, self.settings_snapshot(),
                                                                  styles=self.styles, folders=output_dir is None))
                    processed.paths.append(path)
        processed.warnings = list(getattr(sources, "warnings", []))
        return processed

    def _generate(self, params: GenerationParams, outdir: Path | None, subdir: str, on_progress,
                  prepare_init=None, on_saved=None, options: JobOptions | None = None) -> Processed:
        params.validate()
        options = options or JobOptions()
        overrides = options.settings_overrides()  # checked before queueing: a bad one costs no wait
        params, style_warnings = self._apply_styles(params)
        params, warnings = _clean_prompts(params)
        warnings = style_warnings + warnings
        processed = Processed([], [], [], [])

        def keep_image(item):  # each image as it is made: an interrupt or a kill loses only the one in progress
            text = format_infotext(item.params)
            if options.before_save is not None:
                image, text = options.before_save(item.image, text)
                item = dataclasses.replace(item, image=image)
            processed.images.append(item.image)
            processed.params.append(item.params)
            processed.infotexts.append(text)
            if outdir is not None:
                path = images.save_image(item.image, Path(outdir) / subdir, item.params.seed, text,
                                         fmt=processed.format, naming=images.Naming(
                                             item.params, settings, job=params, index=len(processed.images) - 1,
                                             styles=self.styles, started=task.started_at))
                if processed.save_txt:
                    images.save_text(path, text)
                processed.paths.append(path)
                if on_saved is not None:
                    on_saved(path)

        if outdir is not None:
            images.clean_temp_files(Path(outdir) / subdir)
        with self.queue.task(options.task_id, subdir.split("-")[0]) as task, self.lock:
            # the whole job reads this snapshot; Apply meanwhile reaches the next job, and this job's overrides
            # reach no other job
            settings = dataclasses.replace(self.settings_snapshot(), **overrides)
            processed.task_id, processed.format = task.id, settings.samples_format
            processed.save_txt = settings.save_txt
            model = self.ensure_model(params.model)
            self._apply_vae(model, params.vae or settings.sd_vae)
            self._apply_attention(model, settings)
            request = resolve(params, settings, img2img=prepare_init is not None)
            start = None
            if prepare_init is not None:  # before the LoRAs: a bad image must not cost a merge
                prepared = prepare_init(model, request, settings)
                start, warnings = prepared.init, warnings + prepared.warnings
            loras = self._apply_loras(model, request.prompt, settings)
            hires_model = self._hires_model(request, model, settings) if prepare_init is None else None
            request = request.replace(
                model=model.info.model_name, model_hash=model.short_hash,
                vae=model.vae_info.model_name if model.vae_info else None,
                vae_hash=model.vae_sha256[:10] if model.vae_sha256 else None,
                extra={**{k: v for k, v in params.extra.items() if k != "Lora hashes"}, **loras.infotext})
            control = self._control(task, model, settings, on_progress, keep_image)
            for name, hook in options.hooks.items():
                setattr(control, name, hook)
            patches = options.patches or JobPatches()
            try:
                with patches.applied(model.components):  # undone even when the job fails: the next job is clean
                    result = jobs.generate(model.components, model.denoiser, request, settings, control,
                                           model.encoder, device=self.device, start=start, patches=patches,
                                           upscaler_models=self.upscaler_models,
                                           hires_model=hires_model and hires_model[1])
            finally:
                if hires_model is not None:
                    self._release(hires_model[0])
        processed.interrupted, processed.extra_networks = result.interrupted, result.extra_networks
        processed.warnings = warnings + loras.warnings
        if outdir is not None and options.save_grid and settings.grid_save and len(processed.images) > 1:
            processed.grid_path = self._save_grid(processed, Path(outdir) / subdir.replace("-images", "-grids"),
                                                  settings, params.batch_size)
        return processed

    def _hires_model(self, request: GenerationParams, model: LoadedModel, settings: Settings):
        """(LoadedModel, jobs.hires.HiresModel) for A1111's Hires checkpoint when it names another model than
        the job's: loaded (or taken from the RAM cache), on the device beside the job's model, with the job's VAE
        choice, attention and the hires prompt's LoRAs; None otherwise."""
        from .jobs.hires import HiresModel

        name = request.hr_checkpoint_name
        if not request.enable_hr or not name or name == "Use same checkpoint":
            return None
        info = resolve_checkpoint(name, self.ckpt_dir, self.hashes)
        if info.path == model.info.path:
            return None
        other = self.cache.get(info.path) or self._build(info)
        self.cache[info.path] = other
        if self.offload == "none":
            self._move(other, self.device)
        elif other.offload_hooks is None:
            other.offload_hooks = self._install_offload(other)
        self._apply_vae(other, request.vae or settings.sd_vae)
        self._apply_attention(other, settings)
        self._apply_loras(other, request.hr_prompt or request.prompt, settings)
        other.encoder.clear_cache()
        title = f"{other.info.model_name} [{other.short_hash}]"
        return other, HiresModel(other.components, other.denoiser, other.encoder, title)

    def _release(self, other: LoadedModel):
        """After the job: the hires checkpoint leaves the device, and RAM when the cache is over its limit."""
        if other is self.current:
            return
        if self.device.type != "cpu" and self.offload == "none":
            self._move(other, torch.device("cpu"))
        if len(self.cache) > max(1, int(self.settings.sd_checkpoints_limit)):
            self.cache.pop(other.info.path, None)
            self._evict(force_collect=True)

    @staticmethod
    def _save_grid(processed: Processed, folder: Path, settings: Settings, batch_size: int) -> Path:
        """A1111's grid of a job's pictures (grid-NNNN.png under DATE/), with the first picture's infotext."""
        from .imaging import grid

        rows = grid.grid_rows(len(processed.images), batch_size, settings.n_rows,
                              settings.grid_prevent_empty_spots)
        picture = grid.image_grid(processed.images, rows)
        return images.save_image(picture, folder, None, processed.infotexts[0], fmt=processed.format,
                                 naming=images.Naming(settings=settings), basename="grid")


@dataclass
class JobOptions:
    """How one job is run, beside what it makes: its queue task id (None: a new one) and settings that apply to
    it alone (A1111's override_settings; Settings names); `hooks`: JobControl hook points by name (the Script
    API's, webui/scripts/processing.py); `patches`: model patches for this job alone (engine/patches.py)."""
    task_id: str | None = None
    settings: dict = field(default_factory=dict)
    hooks: dict = field(default_factory=dict)
    patches: JobPatches | None = None
    before_save: Callable | None = None  # (image, infotext) -> (image, infotext), just before a picture is saved
    save_grid: bool = True  # False: no grid of the job's pictures (a script that draws its own: do_not_save_grid)

    def settings_overrides(self) -> dict:
        unknown = sorted(set(self.settings) - {f.name for f in dataclasses.fields(Settings)})
        if unknown:
            raise UserError(f"unknown setting(s) to override: {', '.join(unknown)}")
        dataclasses.replace(Settings(), **self.settings).validate()  # names the first bad value
        return dict(self.settings)


def _clean_prompts(params: GenerationParams) -> tuple[GenerationParams, list[str]]:
    """Prompts with unencodable characters replaced, and the warnings that says so."""
    prompt, warning = clean_prompt(params.prompt)
    negative, negative_warning = clean_prompt(params.negative_prompt)
    warnings = [w.replace("the prompt", where) for w, where in ((warning, "the prompt"),
                                                                (negative_warning, "the negative prompt")) if w]
    return (params.replace(prompt=prompt, negative_prompt=negative) if warnings else params), warnings
