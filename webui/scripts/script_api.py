"""The Script API: A1111's `modules.scripts` shape (Script, AlwaysVisible, PostprocessImageArgs), so an A1111
script ports by changing its import lines (`import webui.scripts.script_api as scripts`).

A script is selectable (shown in the "Script" dropdown; its `run(p, *args)` replaces the normal job) or
always-on (`show` returns AlwaysVisible; its hooks run around every job). `ui(is_img2img)` returns gradio
components whose values become the script's arguments, in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AlwaysVisible = object()  # show() returns it for an always-on script


@dataclass
class PostprocessImageArgs:
    image: Any  # a PIL image; replace it to change the saved picture


@dataclass
class PostprocessBatchListArgs:
    images: list  # the batch's PIL images; replace or edit the list


class Script:
    name: str | None = None  # title().lower(), as A1111 names scripts in its API
    display_title: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    group = None
    infotext_fields: list | None = None  # [(component, infotext key)] for paste
    paste_field_names: list | None = None
    api_info = None
    section = None
    controls = None
    extension = None  # the Extension it came from (extensions.py)

    def title(self) -> str:
        raise NotImplementedError()

    def ui(self, is_img2img: bool):
        """Gradio components whose values are passed to run / the hooks, in order."""

    def show(self, is_img2img: bool):
        """False: hidden; True: in the Script dropdown; AlwaysVisible: an always-on script."""
        return True

    def run(self, p, *args):
        """A selectable script's job: return a Processed (processing.process_images(p) makes one)."""

    def setup(self, p, *args):
        """Before anything else, for always-on scripts: set p's fields."""

    def before_process(self, p, *args):
        """Before the job starts: seeds and prompts are not known yet."""

    def process(self, p, *args):
        """p.all_prompts and p.all_seeds are known; register model patches on p.patches here."""

    def before_process_batch(self, p, *args, **kwargs):
        """kwargs: batch_number, prompts, seeds, subseeds."""

    def process_batch(self, p, *args, **kwargs):
        """kwargs: batch_number, prompts, seeds, subseeds."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Before each sampling pass (first and hires). kwargs: x (start latent), noise, c, uc, pass_name."""

    def before_hr(self, p, *args):
        """Before the hires fix pass."""

    def postprocess_batch(self, p, *args, **kwargs):
        """kwargs: images (the batch as a float tensor B×3×H×W in [0, 1]; read-only), batch_number."""

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        """pp.images: the batch's PIL images, may be replaced. kwargs: batch_number."""

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        """pp.image may be replaced; p.extra_generation_params set here reach this image's infotext."""

    def postprocess(self, p, processed, *args):
        """After the job: processed holds every image."""

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        title = "".join(c if c.isalnum() else "_" for c in self.title().lower())
        tab = "img2img" if self.is_img2img else "txt2img"
        return f"script_{tab}_{title}_{item_id}"
