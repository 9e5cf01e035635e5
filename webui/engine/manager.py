"""PipelineManager: the single owner of the loaded model. Every tab, the API and the CLI go through it."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import architecture, images, processing
from .checkpoints import CheckpointInfo, HashCache, list_checkpoints, read_state_dict, resolve_checkpoint, short_hash
from .errors import UserError
from .infotext import format_infotext
from .params import GenerationParams
from .prompts.embeddings import EmbeddingDatabase
from .prompts.conditioning import prompt_token_count
from .prompts.encoder import PromptEncoder
from .settings import Settings
from .samplers.denoiser import DiscreteEpsDenoiser, alphas_cumprod

log = logging.getLogger(__name__)


class NoCheckpoint(UserError):
    pass


@dataclass
class LoadedModel:
    info: CheckpointInfo
    sha256: str
    components: architecture.Components
    denoiser: DiscreteEpsDenoiser
    encoder: PromptEncoder

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
    extra_networks: list = field(default_factory=list)  # <lora:…> and other tags, for the LoRA manager


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


class PipelineManager:
    def __init__(self, ckpt_dir: Path, data_dir: Path = Path("."), device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, embeddings_dir: Path | None = None):
        self.ckpt_dir = Path(ckpt_dir)
        self.hashes = HashCache(Path(data_dir) / "cache.json")
        self.embeddings = EmbeddingDatabase(Path(embeddings_dir or Path(data_dir) / "embeddings"), self.hashes)
        self.device = torch.device(device) if device else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.settings = Settings()
        self.lock = threading.RLock()  # one job on the device at a time
        self._interrupt = threading.Event()
        self.current: LoadedModel | None = None
        self._bare_encoder: PromptEncoder | None = None  # token counting before any model is loaded

    def list_checkpoints(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.ckpt_dir)

    def load(self, query: str) -> LoadedModel:
        """Load a checkpoint by name, title, hash or path; on any error the previous model stays loaded."""
        info = resolve_checkpoint(query, self.ckpt_dir, self.hashes)
        with self.lock:
            if self.current is not None and self.current.info.path == info.path:
                return self.current
            state_dict = read_state_dict(info.path)
            arch = architecture.detect(state_dict)
            components = architecture.build_components(state_dict, arch, device=self.device, dtype=self.dtype)
            del state_dict
            # embeddings must match this text encoder's width, so they are (re)read for each model
            self.embeddings.load(components.tokenizer, components.text_encoder.config.hidden_size)
            loaded = LoadedModel(info, self.hashes.sha256(info.path), components,
                                 DiscreteEpsDenoiser(components.unet, alphas_cumprod(arch.scheduler_config)),
                                 PromptEncoder(components.tokenizer, components.text_encoder, self.embeddings))
            self.current = loaded  # the old model is released only once the new one works
            log.info("loaded %s (%s)", loaded.title, arch.name)
            return loaded

    def ensure_model(self, query: str | None) -> LoadedModel:
        if query:
            return self.load(query)
        if self.current is None:
            found = self.list_checkpoints()
            if not found:
                raise NoCheckpoint(
                    f"no checkpoint loaded: put a .safetensors or .ckpt Stable Diffusion model in {self.ckpt_dir} "
                    f"(or create a tiny one with `webui make-tiny-model {self.ckpt_dir / 'tiny.safetensors'}`)")
            return self.load(found[0].name)
        return self.current

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
        return prompt_token_count(encoder, prompt, max(1, int(steps)))

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

    def interrupt(self):
        self._interrupt.set()

    def txt2img(self, params: GenerationParams, outdir: Path | None, on_progress=None) -> Processed:
        """Generate and (when outdir is given) save under outdir/txt2img-images/DATE/."""
        params.validate()
        with self.lock:
            self._interrupt.clear()
            model = self.ensure_model(params.model)
            request = params.replace(model=model.info.model_name, model_hash=model.short_hash)
            control = processing.JobControl(on_progress, self._interrupt.is_set)
            result = processing.txt2img(model.components, model.denoiser, request, self.settings, control,
                                         model.encoder)
        processed = Processed([], [], [], [], interrupted=result.interrupted, extra_networks=result.extra_networks)
        for item in result.images:
            text = format_infotext(item.params)
            processed.images.append(item.image)
            processed.params.append(item.params)
            processed.infotexts.append(text)
            if outdir is not None:
                processed.paths.append(
                    images.save_image(item.image, Path(outdir) / "txt2img-images", item.params.seed, text))
        return processed
