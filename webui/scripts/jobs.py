"""One entry for a job that may involve scripts, shared by the UI, the API and the CLI: with no script selected
and no always-on script installed it is the manager's job itself; otherwise the request becomes A1111's `p`,
the selected script runs it (or process_images does) and the always-on scripts hook into it."""
from __future__ import annotations

from pathlib import Path

from ..engine.manager import JobOptions, PipelineManager
from ..engine.params import GenerationParams
from .extensions import ScriptSystem
from .processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images


def run_job(system: ScriptSystem | None, manager: PipelineManager, request: GenerationParams, outdir: Path | None,
            options: JobOptions | None = None, args: list | None = None, init=None, mask=None, img2img=False,
            on_progress=None, on_saved=None):
    """The job's result: the manager's Processed, or the scripts' (same attributes: images, infotexts, paths,
    params, warnings, interrupted, format, task_id). `args`: A1111's flat script args (None: defaults);
    `on_saved(path)`: after each picture is written."""
    options = options or JobOptions()
    runner = system.runner(img2img) if system is not None else None
    selected = bool(args and int(args[0] or 0))
    if runner is None or not (selected or runner.alwayson):
        if img2img:
            return manager.img2img(request, init, mask, outdir, on_progress=on_progress, on_saved=on_saved,
                                   task=options)
        return manager.txt2img(request, outdir, on_progress=on_progress, on_saved=on_saved, task=options)
    if img2img:
        p = StableDiffusionProcessingImg2Img(request, manager, outdir, init_images=[init], mask=mask)
    else:
        p = StableDiffusionProcessingTxt2Img(request, manager, outdir)
    p.task_id, p.on_progress, p.on_saved = options.task_id, on_progress, on_saved
    p.override_settings.update(options.settings)
    processed = runner.run(p, args if args is not None else runner.default_args())
    if processed is None:
        processed = process_images(p)
    processed.from_script = selected
    return processed
