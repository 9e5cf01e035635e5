"""A1111's processing objects for scripts: `p` (StableDiffusionProcessingTxt2Img / Img2Img) with A1111's attribute
names, `process_images(p)` and `Processed`.

`p` is built from the typed request (engine GenerationParams) and turned back into one when the job runs: the
engine never sees `p`. The Script API's hooks reach the job through the engine's hook points (JobControl) and
model patches (`p.patches`, engine/patches.py), never by replacing engine functions."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.errors import UserError
from ..engine.manager import JobOptions
from ..engine.params import GenerationParams
from ..engine.patches import JobPatches
from ..engine.rng import job_seeds
from . import callbacks
from .script_api import PostprocessBatchListArgs, PostprocessImageArgs

# fields a script may set to a list, one item per picture (A1111's p.prompt / p.seed lists)
PER_IMAGE = ("prompt", "negative_prompt", "seed", "subseed")
PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationParams) if f.name != "extra")
# override_settings keys that are request fields here (A1111 keeps them as settings)
OVERRIDE_FIELDS = {"sd_model_checkpoint": "model", "sd_vae": "vae", "CLIP_stop_at_last_layers": "clip_skip"}


class ScriptError(UserError):
    """An extension's script failed: the job stops with its message, the server and the model are unharmed."""


class StableDiffusionProcessing:
    """The job as scripts see it. Attribute names are A1111's; `patches` is this job's JobPatches."""

    is_img2img = False
    subdir = "txt2img-images"

    def __init__(self, params: GenerationParams | None = None, manager=None, outdir: Path | None = None,
                 scripts=None, script_args=(), **fields):
        params = (params or GenerationParams()).replace(**fields)
        for name in PARAM_FIELDS:
            setattr(self, name, copy.copy(getattr(params, name)))
        self.extra_generation_params: dict[str, Any] = dict(params.extra)
        self.override_settings: dict[str, Any] = {}
        self.override_settings_restore_afterwards = True
        self.manager, self.outdir = manager, outdir
        self.outpath_samples = str(Path(outdir) / self.subdir) if outdir else None
        self.outpath_grids = str(Path(outdir) / self.subdir.replace("-images", "-grids")) if outdir else None
        self.do_not_save_samples = outdir is None
        self.do_not_save_grid = outdir is None
        self.scripts, self.script_args = scripts, list(script_args)
        self.patches = JobPatches()
        self.all_prompts: list[str] | None = None
        self.all_negative_prompts: list[str] | None = None
        self.all_seeds: list[int] | None = None
        self.all_subseeds: list[int] | None = None
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.first_image_of_job = 0  # where the engine job running now starts in all_seeds
        self.task_id: str | None = None
        self.restore_faces = False
        self.tiling = False
        self.sampler_noise_scheduler_override = None
        self.user = None
        self.on_progress = None  # (done, total) for the UI / CLI progress bar
        self.on_saved = None  # (path) as each picture is written (the CLI prints it)
        self.warnings: list[str] = []

    # A1111 names for values the request spells differently
    @property
    def sd_model_name(self) -> str | None:
        return self.model

    @property
    def image_cfg_scale(self):
        return None

    def to_params(self) -> tuple[GenerationParams, dict]:
        """The typed request this p describes now, and the settings it overrides for this job alone. A list
        prompt or seed (A1111's per-image form, e.g. the prompt matrix) gives its first item here."""
        values = {name: _first(getattr(self, name)) if name in PER_IMAGE else getattr(self, name)
                  for name in PARAM_FIELDS}
        settings = {}
        for key, value in (self.override_settings or {}).items():
            if key in OVERRIDE_FIELDS:
                values[OVERRIDE_FIELDS[key]] = value
            else:
                settings[key] = value
        values["extra"] = {str(k): _infotext_value(v) for k, v in self.extra_generation_params.items()
                           if v is not None}
        try:
            return GenerationParams(**values).validate(), settings
        except (TypeError, ValueError) as e:
            if isinstance(e, UserError):
                raise
            raise UserError(f"a script set a field to an unusable value: {e}") from e

    def fill_seeds_and_prompts(self):
        """A1111's all_seeds / all_prompts, fixed once per job: -1 becomes a random seed here, so every hook
        sees the seeds the pictures will have. A list prompt or seed gives one picture per item."""
        params, _ = self.to_params()
        lists = [getattr(self, name) for name in PER_IMAGE if isinstance(getattr(self, name), list)]
        count = max(len(x) for x in lists) if lists else self.batch_size * self.n_iter
        seeds, subseeds = job_seeds(params, count)
        self.all_seeds = _per_image(self.seed, count) if isinstance(self.seed, list) else seeds
        self.all_subseeds = _per_image(self.subseed, count) if isinstance(self.subseed, list) else subseeds
        self.all_prompts = _per_image(self.prompt, count)
        self.all_negative_prompts = _per_image(self.negative_prompt, count)

    @property
    def uniform(self) -> bool:
        """Whether one engine job makes every picture: one prompt, and the seeds the engine would count."""
        params, _ = self.to_params()
        seeds, subseeds = job_seeds(params.replace(seed=self.all_seeds[0], subseed=self.all_subseeds[0]),
                                    len(self.all_seeds))
        return (len(set(self.all_prompts)) == 1 and len(set(self.all_negative_prompts)) == 1
                and self.all_seeds == seeds and self.all_subseeds == subseeds
                and len(self.all_seeds) == self.batch_size * self.n_iter)

    def close(self):
        pass

    def js(self) -> str:
        return json.dumps({name: getattr(self, name) for name in PARAM_FIELDS}, default=str)

    def job_params(self, prompt, negative, seed, subseed, single=False) -> GenerationParams:
        params, _ = self.to_params()
        params = params.replace(prompt=prompt, negative_prompt=negative, seed=seed, subseed=subseed)
        return params.replace(batch_size=1, n_iter=1) if single else params

    def run_job(self, options: JobOptions, prompt, negative, seed, subseed, single=False):
        return self.manager.txt2img(self.job_params(prompt, negative, seed, subseed, single),
                                    None if self.do_not_save_samples else self.outdir,
                                    on_progress=self.on_progress, on_saved=self.on_saved, task=options)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    pass


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    is_img2img = True
    subdir = "img2img-images"

    def __init__(self, params: GenerationParams | None = None, manager=None, outdir: Path | None = None,
                 scripts=None, script_args=(), init_images=None, mask=None, **fields):
        super().__init__(params, manager, outdir, scripts, script_args, **fields)
        self.init_images = list(init_images or [])
        self.image_mask = mask

    @property
    def mask(self):
        return self.image_mask

    def run_job(self, options: JobOptions, prompt, negative, seed, subseed, single=False):
        if not self.init_images:
            raise UserError("img2img needs an init image")
        return self.manager.img2img(self.job_params(prompt, negative, seed, subseed, single), self.init_images[0],
                                    self.image_mask,
                                    None if self.do_not_save_samples else self.outdir,
                                    on_progress=self.on_progress, on_saved=self.on_saved, task=options)


def _infotext_value(value) -> str:
    return str(value)


def _first(value):
    return (value[0] if value else None) if isinstance(value, list) else value


def _per_image(value, count: int) -> list:
    if not isinstance(value, list):
        return [value] * count
    if not value:
        raise UserError("a script gave an empty list of prompts or seeds")
    return [value[min(i, len(value) - 1)] for i in range(count)]


class Processed:
    """A1111's Processed: the pictures and what made them, in A1111's attribute names."""

    def __init__(self, p: StableDiffusionProcessing, images: list, infotexts: list[str] | None = None,
                 seed: int | None = None, info: str = "", subseed: int | None = None, all_prompts=None,
                 all_negative_prompts=None, all_seeds=None, all_subseeds=None, index_of_first_image: int = 0,
                 comments: str = "", paths=None, interrupted: bool = False, warnings=None):
        self.images = images
        self.prompt, self.negative_prompt = p.prompt, p.negative_prompt
        self.seed = seed if seed is not None else p.seed
        self.subseed = subseed if subseed is not None else p.subseed
        self.subseed_strength = p.subseed_strength
        self.width, self.height = p.width, p.height
        self.sampler_name, self.scheduler = p.sampler_name, p.scheduler
        self.cfg_scale, self.steps = p.cfg_scale, p.steps
        self.batch_size = p.batch_size
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = dict(p.extra_generation_params)
        self.all_prompts = all_prompts or p.all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = list(infotexts or [info] * len(images))
        self.info = info or (self.infotexts[0] if self.infotexts else "")
        self.index_of_first_image = index_of_first_image
        self.comments = comments
        self.paths = list(paths or [])
        self.interrupted = interrupted
        self.warnings = list(warnings or [])
        self.task_id = p.task_id
        self.params: list[GenerationParams] = []  # each picture's typed request (the engine's record)
        self.format = "png"

    def js(self) -> str:
        return json.dumps({
            "prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds, "subseed_strength": self.subseed_strength,
            "width": self.width, "height": self.height, "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale,
            "steps": self.steps, "batch_size": self.batch_size, "denoising_strength": self.denoising_strength,
            "extra_generation_params": self.extra_generation_params, "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts, "comments": self.comments})


def _guard(what: str, fn, *args, **kwargs):
    """Run an extension's code; its exception becomes a ScriptError naming it (the job fails with that
    message; the model patches are removed by the manager on the way out)."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as e:
        raise ScriptError(f"{what} failed: {type(e).__name__}: {e}") from e


def _batch_tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255.0
                                      for i in images])).permute(0, 3, 1, 2)


def _job_options(p: StableDiffusionProcessing, settings: dict) -> JobOptions:
    """The engine's hook points wired to p's always-on scripts and the global CFG / image-saved callbacks."""
    runner = p.scripts

    def each(method: str, *args, **kwargs):
        if runner is not None:
            runner.call_alwayson(method, p, *args, **kwargs)

    def before_batch(batch, seeds, subseeds):
        start = p.first_image_of_job + batch * len(seeds)
        p.iteration = p.first_image_of_job + batch if p.first_image_of_job else batch
        p.seeds, p.subseeds = list(seeds), list(subseeds)
        p.prompts = p.all_prompts[start:start + len(seeds)]
        p.negative_prompts = p.all_negative_prompts[start:start + len(seeds)]
        kwargs = dict(batch_number=p.iteration, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        each("before_process_batch", **kwargs)
        each("process_batch", **kwargs)

    def before_sampling(pass_name, x, conditioning):
        each("process_before_every_sampling", x=x, noise=x, c=conditioning, uc=None, pass_name=pass_name)

    def postprocess_batch(images, batch):
        each("postprocess_batch", images=_batch_tensor(images), batch_number=batch)
        pp = PostprocessBatchListArgs(list(images))
        each("postprocess_batch_list", pp, batch_number=batch)
        return pp.images

    def postprocess_image(item):
        pp = PostprocessImageArgs(item.image)
        each("postprocess_image", pp)
        extra = {str(k): _infotext_value(v) for k, v in p.extra_generation_params.items() if v is not None}
        return dataclasses.replace(item, image=pp.image, params=item.params.replace(extra={**item.params.extra,
                                                                                            **extra}))

    hooks = dict(before_batch=before_batch, before_sampling=before_sampling,
                 before_hires=lambda batch: each("before_hr"), postprocess_batch=postprocess_batch,
                 postprocess_image=postprocess_image)
    _cfg_callbacks(p.patches)
    def before_save(image, text):
        params = callbacks.ImageSaveParams(image, p, None, {"parameters": text})
        _guard("an on_before_image_saved callback", callbacks.run_strict, "before_image_saved", params)
        return params.image, params.pnginfo.get("parameters", text)
    return JobOptions(task_id=p.task_id, settings=settings, hooks=hooks, patches=p.patches,
                      before_save=before_save if callbacks.has("before_image_saved") else None,
                      save_grid=not p.do_not_save_grid)


def _cfg_callbacks(patches: JobPatches):
    """A1111's on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg callbacks as this job's CFG hooks."""
    if callbacks.has("cfg_denoiser"):
        def before(state):
            params = callbacks.CFGDenoiserParams(state.x, state.image_cond, state.sigma, state.step,
                                                 state.total_steps, state.conds, state.uncond, state.denoiser)
            _guard("an on_cfg_denoiser callback", callbacks.run_strict, "cfg_denoiser", params)
            state.x, state.sigma, state.conds, state.uncond = params.x, params.sigma, params.text_cond, \
                params.text_uncond
        patches.before_model.append(before)
    if callbacks.has("cfg_denoised"):
        def denoised(state):
            params = callbacks.CFGDenoisedParams(state.x, state.step, state.total_steps, state.denoiser)
            _guard("an on_cfg_denoised callback", callbacks.run_strict, "cfg_denoised", params)
            state.x = params.x
        patches.after_model.append(denoised)
    if callbacks.has("cfg_after_cfg"):
        def after(state):
            params = callbacks.AfterCFGCallbackParams(state.x, state.step, state.total_steps)
            _guard("an on_cfg_after_cfg callback", callbacks.run_strict, "cfg_after_cfg", params)
            state.x = params.x
        patches.after_cfg.append(after)


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run the job p describes, with its always-on scripts' hooks, and return A1111's Processed. A script's
    exception fails the job with a message naming the script; the model is left as it was. Pictures with
    different prompts or seeds out of the engine's order (a list p.prompt / p.seed) are made one job each."""
    if p.manager is None:
        raise UserError("this processing object is not attached to a pipeline manager")
    runner = p.scripts
    if runner is not None:
        runner.call_alwayson("before_process", p)
    p.patches = JobPatches()  # patches belong to one job: a script running several jobs re-registers them
    p.fill_seeds_and_prompts()
    if runner is not None:
        runner.call_alwayson("process", p)
    _, settings = p.to_params()
    options = _job_options(p, settings)
    results = []
    if p.uniform:
        p.first_image_of_job = 0
        results.append(p.run_job(options, p.all_prompts[0], p.all_negative_prompts[0], p.all_seeds[0],
                                 p.all_subseeds[0]))
    else:
        for i in range(len(p.all_seeds)):
            p.first_image_of_job = i
            results.append(p.run_job(options, p.all_prompts[i], p.all_negative_prompts[i], p.all_seeds[i],
                                     p.all_subseeds[i], single=True))
            if results[-1].interrupted:
                break
    paths = [path for r in results for path in r.paths]
    for path in paths:
        if callbacks.has("image_saved"):
            callbacks.run("image_saved", callbacks.ImageSaveParams(None, p, str(path), {}))
    made = [x for r in results for x in r.params]
    processed = Processed(p, [i for r in results for i in r.images], [t for r in results for t in r.infotexts],
                          paths=paths, seed=made[0].seed if made else p.all_seeds[0],
                          all_seeds=[x.seed for x in made] or p.all_seeds,
                          all_prompts=[x.prompt for x in made] or p.all_prompts,
                          interrupted=any(r.interrupted for r in results),
                          warnings=[w for r in results for w in r.warnings])
    processed.task_id, processed.format, processed.params = results[-1].task_id, results[-1].format, made
    if runner is not None:
        runner.call_alwayson("postprocess", p, processed)
    return processed


def save_grid(p: StableDiffusionProcessing, grid, infotext: str) -> Path:
    """A script's grid picture, saved under outputs/<tab>-grids/DATE/ with its infotext."""
    from ..engine.imaging import saving

    settings = p.manager.settings_snapshot()
    return saving.save_image(grid, Path(p.outdir) / p.subdir.replace("-images", "-grids"), None, infotext,
                             fmt=settings.samples_format)


def fix_seed(p: StableDiffusionProcessing) -> None:
    """A1111's processing.fix_seed: -1 seeds become concrete ones before a script runs several jobs."""
    from ..engine.rng import random_seed

    if p.seed in (-1, None, ""):
        p.seed = random_seed()
    if p.subseed in (-1, None, ""):
        p.subseed = random_seed()
