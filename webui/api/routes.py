"""The `/sdapi/v1/*` routes (A1111 1.10's paths and shapes) over one PipelineManager.

Generation routes are async and run their job on a worker thread of their own pool: a job waits its turn in the
manager's queue there, and the default pool stays free for progress polls, options and lists while twenty jobs
wait. Every job, the UI's included, goes through the same queue (engine/tasks.py)."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import APIRouter, Body, Depends

from ..engine import samplers
from ..engine.imaging import upscalers
from ..engine.imaging.metadata import infotext_of
from ..engine.jobs.hires import LATENT_MODES
from ..engine.imaging.open import open_base64
from ..engine.infotext import PNG_INFO_MAX_PIXELS, infotext_fields
from ..engine.jobs.img2img import MAX_INIT_PIXELS
from ..engine.manager import JobOptions, PipelineManager
from ..engine.samplers.schedules import SCHEDULES
from ..engine.settings import Settings
from ..engine.settings_file import coerce_settings
from ..engine.errors import UserError
from ..engine.fields import InvalidParams
from ..scripts.jobs import run_job as run_script_job
from . import extras
from . import options as options_api
from .auth import basic_auth_dependency
from .errors import make_route_class
from .requests import Img2ImgRequest, NotAvailable, Txt2ImgRequest, echo, to_params
from .responses import b64_image, info_json

log = logging.getLogger("webui.api")
PREFIX = "/sdapi/v1"

JOB_THREADS = 1024  # threads that may wait in the queue at once; the queue's own limit refuses sooner


@dataclass
class ApiConfig:
    outdir: Path | None  # where save_images writes (outdir/txt2img-images/…)
    flags: dict = field(default_factory=dict)  # /cmd-flags: the launch flags
    credentials: dict[str, str] = field(default_factory=dict)  # --api-auth
    api_log: bool = False
    scripts: Any = None  # webui.scripts.extensions.ScriptSystem: script_name / alwayson_scripts, /scripts


class _JobRunner:
    def __init__(self):
        self.limiter = anyio.CapacityLimiter(JOB_THREADS)

    async def __call__(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)


def _override(body, request) -> tuple[Any, JobOptions, dict]:
    """(the request with the checkpoint and VAE it overrides, the job's options, the settings overridden).
    Unknown override names are ignored with a warning, as A1111 sets them on nothing; bad values are refused."""
    overrides = dict(body.override_settings or {})
    checkpoint, vae = overrides.pop(options_api.CHECKPOINT_KEY, None), overrides.pop("sd_vae", None)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        log.warning("override_settings not known here, ignored: %s", ", ".join(unknown))
    try:
        settings = coerce_settings({k: v for k, v in overrides.items() if k in known})
    except ValueError as e:
        raise InvalidParams(f"override_settings: {e}") from None
    for name, value in (("sd_model_checkpoint", checkpoint), ("sd_vae", vae)):
        if value is not None and not isinstance(value, str):
            raise InvalidParams(f"override_settings: {name} must be text, got {value!r}")
    request = request.replace(model=checkpoint or None, vae=vae or None)
    return request, JobOptions(task_id=body.force_task_id, settings=settings), settings


def _script_args(body, system, img2img: bool) -> list | None:
    """A1111's flat script arguments for the request, or None (no script involved). An unknown script or
    too many arguments is A1111's 422; empty alwayson args for a script not installed are accepted (clients
    send them to switch an extension off)."""
    if not body.script_name and not any((v.get("args") if isinstance(v, dict) else v)
                                        for v in (body.alwayson_scripts or {}).values()):
        return None
    if system is None:
        raise _Unprocessable(f"Script '{body.script_name}' not found" if body.script_name else
                             f"always on script {next(iter(body.alwayson_scripts))} not found")
    try:
        return system.runner(img2img).build_args(body.script_name, body.script_args,
                                                 body.alwayson_scripts)
    except UserError as e:
        raise _Unprocessable(str(e)) from None


def script_infos(system) -> list[dict]:
    """A1111's /script-info: every script of both tabs with its arguments' labels, defaults and bounds."""
    infos = []
    for runner in (system.txt2img, system.img2img):
        runner.ensure_args_layout()
        for script in runner.scripts:
            infos.append({"name": script.name, "is_alwayson": script.alwayson, "is_img2img": runner.is_img2img,
                          "args": [_arg_info(c) for c in script.controls or []]})
    return infos


def _arg_info(component) -> dict:
    choices = getattr(component, "choices", None)
    if choices:
        choices = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
    return {"label": getattr(component, "label", None), "value": getattr(component, "value", None),
            "minimum": getattr(component, "minimum", None), "maximum": getattr(component, "maximum", None),
            "step": getattr(component, "step", None), "choices": choices or None}


class _Unprocessable(InvalidParams):
    pass


def build_router(manager: PipelineManager, config: ApiConfig) -> APIRouter:
    dependencies = [Depends(basic_auth_dependency(config.credentials))] if config.credentials else []
    router = APIRouter(route_class=make_route_class(lambda: config.api_log), dependencies=dependencies)
    run_job = _JobRunner()

    def generate(body, img2img: bool) -> dict:
        script_args = _script_args(body, config.scripts, img2img)
        request, options, overridden = _override(body, to_params(body))
        outdir = config.outdir if body.save_images else None
        started = datetime.datetime.now()
        if img2img:
            if not body.init_images:
                raise InvalidParams("img2img needs init_images: one base64 image")
            if len(body.init_images) > 1:
                raise InvalidParams("init_images holds more than one image; send one per request")
            init = open_base64(body.init_images[0], MAX_INIT_PIXELS, "Init image")
            mask = open_base64(body.mask, MAX_INIT_PIXELS, "Mask") if body.mask else None
        else:
            init = mask = None
        processed = run_script_job(config.scripts, manager, request, outdir, options, script_args, init, mask,
                                   img2img)
        if not body.override_settings_restore_afterwards:  # A1111: the overrides stay set
            if overridden or request.vae:
                manager.update_settings(**overridden, **({"sd_vae": request.vae} if request.vae else {}))
            if request.model:
                manager.select(request.model)
        fmt = processed.format
        # pictures a script adds after the job's own (ControlNet's detected maps) carry no parameters
        texts = list(processed.infotexts) + [None] * (len(processed.images) - len(processed.infotexts))
        images = [b64_image(image, text, fmt) for image, text in zip(processed.images, texts)] \
            if body.send_images else []
        if img2img and body.include_init_images and body.send_images:
            images += [b64_image(init)] + ([b64_image(mask)] if mask is not None else [])
        return {"images": images, "parameters": echo(body, keep_images=not img2img or body.include_init_images),
                "info": info_json(processed, request, started)}

    @router.post(f"{PREFIX}/txt2img")
    async def txt2img(body: Txt2ImgRequest):
        return await run_job(generate, body, False)

    @router.post(f"{PREFIX}/img2img")
    async def img2img(body: Img2ImgRequest):
        return await run_job(generate, body, True)

    # ------------------------------------------------------------------------------------- progress and control

    preview_cache: dict = {}

    def preview_png(task) -> str | None:
        if task.preview is None:
            return None
        key = (task.id, task.preview_id)
        if preview_cache.get("key") != key:
            from PIL import Image

            rgb = ((task.preview.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            preview_cache.update(key=key, png=b64_image(Image.fromarray(rgb)))
        return preview_cache["png"]

    @router.get(f"{PREFIX}/progress")
    async def progress(skip_current_image: bool = False):
        task = manager.queue.current
        if task is None:
            state = dict(skipped=False, interrupted=False, stopping_generation=False, job="", job_count=0,
                         job_timestamp="0", job_no=0, sampling_step=0, sampling_steps=0)
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None,
                    "current_task": None}
        stamp = datetime.datetime.fromtimestamp(task.started_at or task.queued_at).strftime("%Y%m%d%H%M%S")
        state = dict(skipped=task.skipped, interrupted=task.interrupted, stopping_generation=False, job=task.job,
                     job_count=max(task.job_count, 1), job_timestamp=stamp, job_no=task.job_no,
                     sampling_step=task.sampling_step, sampling_steps=task.sampling_steps)
        return {"progress": task.progress(), "eta_relative": task.eta(), "state": state,
                "current_image": None if skip_current_image else preview_png(task),
                "textinfo": task.textinfo or None, "current_task": task.id}

    @router.post("/internal/progress")
    async def task_progress(body: dict = Body(default_factory=dict)):
        """A1111's per-task progress: {id_task, id_live_preview, live_preview}."""
        task_id = str(body.get("id_task") or "")
        task, place = manager.queue.find(task_id)
        if task is None:
            return {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                    "live_preview": None, "id_live_preview": -1, "textinfo": "Unknown task"}
        status = task.status
        wants = body.get("live_preview", True) and body.get("id_live_preview", -1) != task.preview_id
        return {"active": status == "running", "queued": status == "queued", "completed": status == "done",
                "progress": task.progress() if status != "queued" else None, "eta": task.eta() or None,
                "live_preview": preview_png(task) if wants and status == "running" else None,
                "id_live_preview": task.preview_id, "queue_position": place,
                "textinfo": "In queue..." if status == "queued" else task.textinfo or None}

    @router.get("/internal/pending-tasks")
    async def pending_tasks():
        return {"tasks": [t.id for t in manager.queue.pending()]}

    @router.post(f"{PREFIX}/interrupt")
    async def interrupt():
        manager.interrupt()
        return {}

    @router.post(f"{PREFIX}/skip")
    async def skip():
        manager.skip()
        return None

    # ---------------------------------------------------------------------------------------------- options

    @router.get(f"{PREFIX}/options")
    def get_options():
        return options_api.get_options(manager)

    @router.post(f"{PREFIX}/options")
    def set_options(body: Any = Body(...)):
        try:
            options_api.set_options(manager, body)
        except options_api.BadOption as e:
            raise InvalidParams(str(e)) from None
        return None

    @router.get(f"{PREFIX}/cmd-flags")
    async def cmd_flags():
        return config.flags

    # ------------------------------------------------------------------------------------------------ lists

    @router.get(f"{PREFIX}/samplers")
    async def list_samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.options.items()}}
                for s in samplers.SAMPLERS]

    @router.get(f"{PREFIX}/schedulers")
    async def list_schedulers():
        return [{"name": s.key, "label": s.label, "aliases": list(s.aliases) or None,
                 "default_rho": s.default_rho, "need_inner_model": s.need_inner_model} for s in SCHEDULES]

    @router.get(f"{PREFIX}/upscalers")
    async def list_upscalers():
        files = {f.name: f for f in manager.upscaler_models.files()}
        return [{"name": name, "model_name": name if name in files else None,
                 "model_path": str(files[name].path) if name in files else None, "model_url": None, "scale": 4}
                for name in upscalers.names(manager.upscaler_models)]

    @router.get(f"{PREFIX}/latent-upscale-modes")
    async def latent_upscale_modes():
        return [{"name": name} for name in LATENT_MODES]

    @router.get(f"{PREFIX}/sd-models")
    def sd_models():
        out = []
        loaded = {path: model for path, model in list(manager.cache.items())}
        for info in manager.list_checkpoints():
            # a loaded one is hashed (once) so its title matches the options' sd_model_checkpoint; hashing every
            # file on a listing would read them all, so the others show a hash once one is known
            sha = loaded[info.path].sha256 if info.path in loaded else manager.hashes.cached(info.path)
            sidecar = info.path.with_suffix(".yaml")
            out.append({"title": f"{info.name} [{sha[:10]}]" if sha else info.name, "model_name": info.model_name,
                        "hash": sha[:10] if sha else None, "sha256": sha, "filename": str(info.path),
                        "config": str(sidecar) if sidecar.is_file() else None})
        return out

    @router.get(f"{PREFIX}/sd-vae")
    def sd_vae():
        return [{"model_name": v.model_name, "filename": str(v.path)} for v in manager.list_vaes()]

    @router.get(f"{PREFIX}/embeddings")
    def embeddings():
        db = manager.embeddings

        def describe(emb):
            return {"step": emb.step, "sd_checkpoint": None, "sd_checkpoint_name": emb.checkpoint_name,
                    "shape": emb.width, "vectors": emb.count}
        skipped = {name: describe(reason) if not isinstance(reason, str) else
                   {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
                   for name, reason in db.skipped.items()}
        return {"loaded": {name: describe(emb) for name, emb in db.loaded.items()}, "skipped": skipped}

    @router.get(f"{PREFIX}/loras")
    def loras():
        return [{"name": info.name, "alias": info.alias, "path": str(info.path), "metadata": info.metadata()}
                for info in manager.loras.list()]

    for name in ("prompt-styles", "hypernetworks", "face-restorers", "realesrgan-models", "extensions"):
        router.add_api_route(f"{PREFIX}/{name}", _empty_list, methods=["GET"], name=name)

    @router.get(f"{PREFIX}/scripts")
    async def scripts():
        system = config.scripts
        if system is None:
            return {"txt2img": [], "img2img": []}
        return {tab: [s.name for s in system.runner(tab == "img2img").scripts] for tab in ("txt2img", "img2img")}

    @router.get(f"{PREFIX}/script-info")
    def script_info():
        return script_infos(config.scripts) if config.scripts is not None else []

    @router.get(f"{PREFIX}/memory")
    def memory():
        return _memory()

    # ------------------------------------------------------------------------------------------- refreshes

    # actions answering null, as A1111's (checkpoints and VAEs are listed afresh on every call: nothing to drop)
    actions = {"refresh-checkpoints": manager.list_checkpoints, "refresh-vae": manager.list_vaes,
               "refresh-embeddings": manager.refresh_embeddings, "refresh-loras": manager.loras.refresh,
               "unload-checkpoint": manager.unload, "reload-checkpoint": lambda: manager.ensure_model(None)}
    for name, action in actions.items():
        router.add_api_route(f"{PREFIX}/{name}", _answering_null(action), methods=["POST"], name=name)

    # --------------------------------------------------------------------------------------------- images

    @router.post(f"{PREFIX}/png-info")
    def png_info(body: dict = Body(...)):
        image = open_base64(body.get("image") or "", PNG_INFO_MAX_PIXELS, "PNG Info image")
        with image:
            if image.format == "PNG":
                image.load()  # text chunks after the pixels are read with them (size checked first)
            items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
            items.pop("parameters", None)
            text = infotext_of(image)  # a JPEG's or WebP's EXIF UserComment too
        if text is None:
            return {"info": "", "items": items, "parameters": {}}
        return {"info": str(text), "items": items, "parameters": infotext_fields(str(text))}

    extras.add_routes(router, PREFIX, manager, run_job)

    def interrogate_not_available():
        raise NotAvailable("interrogate (CLIP / DeepBooru captions) is not available in this version")

    router.add_api_route(f"{PREFIX}/interrogate", interrogate_not_available, methods=["POST"], name="interrogate")
    return router


def _empty_list():
    return []


def _answering_null(action):
    def route():
        action()
        return None
    return route


def _memory() -> dict:
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    ram = {"free": free, "used": total - free, "total": total}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "unavailable"}}
    free_gpu, total_gpu = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    cuda = {"system": {"free": free_gpu, "used": total_gpu - free_gpu, "total": total_gpu},
            "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                          "peak": stats.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                         "peak": stats.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                         "peak": stats.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
    return {"ram": ram, "cuda": cuda}
