"""One declaration per request field (webui/engine/fields.py): validation, schema, CLI flags, infotext and UI
sliders are generated from GenerationParams' field metadata, so one extra declared field reaches them all."""
from __future__ import annotations

import dataclasses
import json

import pytest

from webui import cli
from webui.engine.fields import declared, declared_field
from webui.engine.infotext import EXTRA_KEYS, FIXED_KEYS, format_infotext, parse_infotext
from webui.engine.params import SIZE_MAX, STEPS_MAX, GenerationParams, InvalidParams, param

# A field added the way a feature would add it: one declaration, no registration anywhere.
Tiled = dataclasses.make_dataclass("Tiled", [
    ("tile_overlap", int, param(8, label="Tile overlap", minimum=0, maximum=64, step=8, infotext="Tile overlap",
                                cli="--tile-overlap", help="pixels two neighbouring tiles share")),
], bases=(GenerationParams,))


# --- a new field -----------------------------------------------------------------------------------


def test_new_field_is_a_cli_flag_with_its_help():
    parser = cli.txt2img_parser(params_cls=Tiled)
    text = " ".join(parser.format_help().split())  # argparse wraps the help text
    assert "--tile-overlap TILE_OVERLAP pixels two neighbouring tiles share (0-64)" in text
    args = parser.parse_args(["--tile-overlap", "16", "--steps", "5"])
    p = cli.params_from_args(args, Tiled)
    assert isinstance(p, Tiled) and (p.tile_overlap, p.steps) == (16, 5)
    assert cli.params_from_args(parser.parse_args([]), Tiled).tile_overlap == 8
    assert "--tile-overlap" in cli.img2img_parser(params_cls=Tiled).format_help()


def test_new_field_round_trips_through_infotext():
    p = Tiled(prompt="a cat", seed=3, tile_overlap=24)
    text = format_infotext(p)
    assert text == ("a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Automatic, CFG scale: 7, Seed: 3, "
                    "Size: 512x512, Tile overlap: 24, Version: gouache-0.1.0")
    back = parse_infotext(text, cls=Tiled)
    assert isinstance(back, Tiled) and back.tile_overlap == 24 and "Tile overlap" not in back.extra
    assert format_infotext(back) == text
    # The base class does not know the key: it stays in extra, verbatim.
    assert parse_infotext(text).extra["Tile overlap"] == "24"


def test_new_field_is_validated_against_its_bounds():
    with pytest.raises(InvalidParams, match="^tile overlap must be between 0 and 64, got 99$"):
        Tiled(tile_overlap=99).validate()
    with pytest.raises(InvalidParams, match="tile overlap must be between 0 and 64, got -1"):
        Tiled(tile_overlap=-1).validate()
    assert Tiled(tile_overlap=64).validate().tile_overlap == 64


def test_new_field_in_schema():
    entry = Tiled.schema()["tile_overlap"]
    assert entry["type"] == "integer" and (entry["minimum"], entry["maximum"], entry["default"]) == (0, 64, 8)
    assert entry["label"] == "Tile overlap" and entry["api"] == "tile_overlap"
    assert "tile_overlap" not in GenerationParams.schema()


# --- the declarations of GenerationParams ----------------------------------------------------------


def test_schema_covers_every_field_and_is_json():
    schema = GenerationParams.schema()
    assert list(schema) == [f.name for f in dataclasses.fields(GenerationParams)]
    json.dumps(schema)
    assert schema["steps"] == {
        "type": "integer", "nullable": False, "default": 20, "ui_default": None, "minimum": 1,
        "maximum": STEPS_MAX, "multiple_of": None, "sentinel": None, "choices": None, "names": None,
        "label": "Sampling steps", "help": None, "api": "steps", "api_default": 50, "infotext": "Steps",
        "cli": "--steps"}
    assert schema["width"]["multiple_of"] == 8 and schema["seed"]["sentinel"] == -1
    assert schema["eta"]["type"] == "number" and schema["eta"]["nullable"]
    assert schema["rng"]["choices"] == ["CPU", "GPU"]
    assert (schema["inpainting_fill"]["names"], schema["inpainting_fill"]["ui_default"]) == (
        ["fill", "original", "latent noise", "latent nothing"], 1)
    assert (schema["inpainting_fill"]["minimum"], schema["inpainting_fill"]["maximum"]) == (0, 3)
    assert schema["extra"]["type"] == "object" and schema["extra"]["default"] == {}


def test_keys_and_flags_are_declared_once():
    specs = [d.spec for d in declared(GenerationParams)]
    infotext = [s.infotext for s in specs if s.infotext]
    flags = [s.cli for s in specs if s.cli]
    assert len(infotext) == len(set(infotext)) and len(flags) == len(set(flags))
    # Every infotext key is one A1111 writes, so its position in the line is A1111's.
    assert set(infotext) <= set(FIXED_KEYS) | set(EXTRA_KEYS)


def test_cli_flags_and_defaults_unchanged():
    """The flags the README documents, with the defaults they always had."""
    t2i = cli.txt2img_parser()
    flags = {a.option_strings[0]: a.default for a in t2i._actions if a.option_strings}
    assert {k: flags[k] for k in (
        "--prompt", "--negative-prompt", "--steps", "--sampler", "--scheduler", "--cfg-scale", "--seed", "--width",
        "--height", "--batch-size", "--n-iter", "--subseed", "--subseed-strength", "--seed-resize-from-w",
        "--seed-resize-from-h")} == {
        "--prompt": "", "--negative-prompt": "", "--steps": 20, "--sampler": "DPM++ 2M", "--scheduler": "Automatic",
        "--cfg-scale": 7.0, "--seed": -1, "--width": 512, "--height": 512, "--batch-size": 1, "--n-iter": 1,
        "--subseed": -1, "--subseed-strength": 0.0, "--seed-resize-from-w": 0, "--seed-resize-from-h": 0}
    knobs = ("--eta", "--eta-ddim", "--s-churn", "--s-tmin", "--s-tmax", "--s-noise", "--sigma-min", "--sigma-max",
             "--rho", "--ensd", "--rng", "--vae", "--clip-skip", "--emphasis")
    assert all(flags[k] is None for k in knobs)
    # hires fix's flags; its denoise is unset (0.7 when hires fix is on), never img2img's 0.75
    assert {k: flags[k] for k in ("--enable-hr", "--hr-scale", "--hr-upscaler", "--hr-second-pass-steps",
                                  "--hr-resize-x", "--hr-resize-y", "--denoising-strength", "--hr-sampler",
                                  "--hr-scheduler", "--hr-checkpoint", "--hr-prompt", "--hr-negative-prompt")} == {
        "--enable-hr": False, "--hr-scale": 2.0, "--hr-upscaler": None, "--hr-second-pass-steps": 0,
        "--hr-resize-x": 0, "--hr-resize-y": 0, "--denoising-strength": None, "--hr-sampler": None,
        "--hr-scheduler": None, "--hr-checkpoint": None, "--hr-prompt": "", "--hr-negative-prompt": ""}
    i2i = {a.option_strings[0]: a.default for a in cli.img2img_parser()._actions if a.option_strings}
    assert {k: i2i[k] for k in ("--denoising-strength", "--resize-mode", "--mask-blur", "--invert-mask",
                                "--masked-content", "--only-masked", "--only-masked-padding", "--scale")} == {
        "--denoising-strength": 0.75, "--resize-mode": "Just resize", "--mask-blur": 4, "--invert-mask": False,
        "--masked-content": "original", "--only-masked": False, "--only-masked-padding": 32, "--scale": None}


def test_cli_args_become_params():
    args = cli.img2img_parser().parse_args([
        "--init-image", "x.png", "--sampler", "Euler a", "--clip-skip", "2", "--rng", "CPU", "--masked-content",
        "latent noise", "--invert-mask", "--only-masked", "--mask-blur", "0", "--ckpt", "tiny"])
    p = cli.params_from_args(args)
    assert (p.sampler_name, p.clip_skip, p.rng, p.model) == ("Euler a", 2, "CPU", "tiny")
    assert (p.inpainting_fill, p.inpainting_mask_invert, p.inpaint_full_res, p.mask_blur) == (2, True, True, 0)
    assert (p.denoising_strength, p.inpaint_full_res_padding) == (0.75, 32)
    # txt2img has no img2img flags: those fields stay unset, so they are not written to infotext.
    p = cli.params_from_args(cli.txt2img_parser().parse_args([]))
    assert p == GenerationParams()


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "steps must be between 1 and 150, got 0"),
    (dict(cfg_scale=31), "CFG scale must be between 0.0 and 30.0, got 31"),
    (dict(width=65), "width must be a multiple of 8, got 65"),
    (dict(height=4096), "height must be between 64 and 2048, got 4096"),
    (dict(batch_size=9), "batch size must be between 1 and 8, got 9"),
    (dict(n_iter=0), "batch count must be between 1 and 100, got 0"),
    (dict(seed=-2), "seed must be between 0 and 4294967295, got -2"),
    (dict(subseed=2**32), "variation seed must be between 0 and 4294967295, got 4294967296"),
    (dict(subseed_strength=1.5), "variation strength must be between 0.0 and 1.0, got 1.5"),
    (dict(seed_resize_from_w=SIZE_MAX + 1), "resize seed from width must be between 0 and 2048, got 2049"),
    (dict(clip_skip=13), "clip skip must be between 1 and 12, got 13"),
    (dict(emphasis="Loud"), "emphasis must be one of Original, No norm, Ignore, None; got 'Loud'"),
    (dict(rng="NV"), "RNG source must be one of CPU, GPU; got 'NV'"),
    (dict(denoising_strength=2.0), "denoising strength must be between 0.0 and 1.0, got 2.0"),
    (dict(resize_mode=4), "resize mode must be between 0 and 3, got 4"),
    (dict(mask_blur=65), "mask blur must be between 0 and 64, got 65"),
    (dict(inpainting_fill=4), "masked content must be between 0 and 3, got 4"),
    (dict(inpaint_full_res_padding=300), "only masked padding must be between 0 and 256, got 300"),
    (dict(inpainting_mask_weight=1.5), "conditional mask weight must be between 0.0 and 1.0, got 1.5"),
    (dict(initial_noise_multiplier=2.0), "noise multiplier must be between 0.0 and 1.5, got 2.0"),
])
def test_validation_messages(change, message):
    with pytest.raises(InvalidParams) as info:
        GenerationParams(**change).validate()
    assert str(info.value) == message


def test_validation_accepts_defaults_sentinels_and_unset():
    GenerationParams().validate()
    GenerationParams(seed=-1, subseed=-1, seed_resize_from_w=100, clip_skip=None, rng="GPU").validate()
    GenerationParams(denoising_strength=0.0, mask_blur=0, inpainting_fill=3, inpaint_full_res=True).validate()


def test_ui_sliders_come_from_the_declarations():
    pytest.importorskip("gradio")
    from webui.ui.common import radio_for, slider_for

    steps = slider_for("steps")
    assert (steps.minimum, steps.maximum, steps.step, steps.value, steps.label) == (1, 150, 1, 20, "Sampling steps")
    strength = slider_for("denoising_strength")
    assert (strength.minimum, strength.maximum, strength.value) == (0.0, 1.0, 0.75)
    assert slider_for("cfg_scale", minimum=1).minimum == 1
    fill = radio_for("inpainting_fill")
    assert fill.value == "original" and fill.label == "Masked content"
    overlap = slider_for("tile_overlap", Tiled)
    assert (overlap.minimum, overlap.maximum, overlap.step, overlap.label) == (0, 64, 8, "Tile overlap")
    assert declared_field(Tiled, "tile_overlap").spec.label == "Tile overlap"


@pytest.mark.parametrize("field", ["cfg_scale", "subseed_strength", "eta", "sigma_min", "s_noise"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_by_name(field, value):
    from webui.engine.fields import declared_field

    noun = declared_field(GenerationParams, field).spec.noun
    with pytest.raises(InvalidParams, match=f"{noun} must be a finite number"):
        GenerationParams(**{field: value}).validate()
