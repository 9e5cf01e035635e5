"""`/sdapi/v1/extra-single-image` and `extra-batch-images`: Extras (engine/jobs/extras.py) over the API, A1111's
shapes. The bodies are generated from ExtrasParams' declarations; face restoration is not available (a nonzero
visibility is 501)."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from ..engine.imaging.open import open_base64
from ..engine.jobs.extras import EXTRAS_MAX_SIDE, ExtrasParams
from ..engine.manager import PipelineManager
from .requests import NotAvailable, body_model, fields_of
from .responses import b64_image

_FACES = {"gfpgan_visibility": (float, 0.0), "codeformer_visibility": (float, 0.0),
          "codeformer_weight": (float, 0.0), "show_extras_results": (bool, True), "upscale_first": (bool, False)}
ExtrasSingleImageRequest = body_model(ExtrasParams, "ExtrasSingleImageRequest", **_FACES,
                                      image=(str, Field("", description="base64 picture (data: URLs accepted)")))
ExtrasBatchImagesRequest = body_model(ExtrasParams, "ExtrasBatchImagesRequest", **_FACES,
                                      imageList=(list[dict], Field(default_factory=list,
                                                                   description="[{data: base64, name}]")))


def _check_faces(body) -> None:
    if (body.gfpgan_visibility or 0) > 0 or (body.codeformer_visibility or 0) > 0:
        raise NotAvailable("face restoration (GFPGAN, CodeFormer) is not available in this version")


def _open(text: str, what: str):
    from ..engine.infotext import infotext_of_image

    image = open_base64(text, EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, what)
    with image:
        image.load()
        return image.copy(), infotext_of_image(image)


def add_routes(router: APIRouter, prefix: str, manager: PipelineManager, run_job, outdir=None) -> None:
    def run(sources, body) -> tuple[list[str], str]:
        processed = manager.extras(sources, fields_of(body, ExtrasParams), None)
        pictures = [b64_image(image, source_text, processed.format, {"postprocessing": text})
                    for image, text, (_, source_text) in zip(processed.images, processed.infotexts, sources)]
        return pictures, (processed.infotexts[0] if processed.infotexts else "")

    def single(body) -> dict:
        _check_faces(body)
        pictures, text = run([_open(body.image, "Extras image")], body)
        return {"html_info": f"<p>{text}</p>", "image": pictures[0]}

    def batch(body) -> dict:
        _check_faces(body)
        sources = [_open(item.get("data") or "", f"Extras image {i + 1}") for i, item in enumerate(body.imageList)]
        pictures, text = run(sources, body)
        return {"html_info": f"<p>{text}</p>", "images": pictures}

    @router.post(f"{prefix}/extra-single-image")
    async def extra_single_image(body: ExtrasSingleImageRequest):
        return await run_job(single, body)

    @router.post(f"{prefix}/extra-batch-images")
    async def extra_batch_images(body: ExtrasBatchImagesRequest):
        return await run_job(batch, body)
