"""ControlNet on the engine: tiny ControlNets made from the tiny SD1 UNet, written in the original LDM layout
(with and without `control_model.`) and in diffusers' layout, drive the UNet through a per-job residual patch
with the extension's unit semantics and control modes."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small
from webui.engine.control import residuals
from webui.engine.control.units import CONTROL_MODES, ControlUnit
from webui.engine.errors import UserError
from webui.engine.manager import JobOptions
from webui.engine.models.ldm_layout import UNET_PREFIX, controlnet_key, unet_key
from webui.engine.patches import ControlCall, JobPatches

PARAMS = small(steps=3, seed=5, sampler_name="Euler")


@pytest.fixture
def controlnets(manager, data_dir):
    """{"zero", "diffusers", "ldm", "prefixed"}: file names in models/ControlNet (the last three the same
    weights, non-zero zero-convs)."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    unet = manager.ensure_model(None).components.unet
    folder = data_dir / "models" / "ControlNet"
    folder.mkdir(parents=True)
    net = ControlNetModel.from_unet(unet).float()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "cn-zero.safetensors"))
    torch.manual_seed(3)
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.normal_(0, 0.3)
            block.bias.normal_(0, 0.3)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "cn-diffusers.safetensors"))
    config = dict(unet.config)
    ldm = {controlnet_key(k, config): v for k, v in state.items()}
    save_file(ldm, str(folder / "cn-ldm.safetensors"))
    torch.save({"control_model." + k: v for k, v in ldm.items()}, folder / "cn-prefixed.pth")
    # a "diff" ControlNet: the weights it shares with the UNet stored as differences from the UNet's
    base = {unet_key(k, config).removeprefix(UNET_PREFIX): v for k, v in unet.state_dict().items()
            if not k.startswith("up_blocks.") and not k.startswith("conv_norm_out") and not k.startswith("conv_out")}
    diff = {k: (v - base[k]) if k in base else v for k, v in ldm.items()}
    save_file({**diff, "difference": torch.tensor([1.0])}, str(folder / "cn-diff.safetensors"))
    return folder


def hint():
    picture = Image.new("RGB", (64, 64))
    picture.paste((255, 255, 255), (8, 8, 40, 56))
    return picture


def run(manager, folder, *units, params=PARAMS):
    patches = JobPatches()
    extra = residuals.register(patches, list(units), folder, params.width, params.height, params.seed)
    return manager.txt2img(params.replace(extra=extra), None, task=JobOptions(patches=patches))


def pixels(processed):
    return np.asarray(processed.images[0])


def unit(model="cn-diffusers", **kw):
    return ControlUnit(model=model, image=hint(), **kw).checked()


def test_zero_convs_weight_zero_and_guidance_end_zero_change_nothing(manager, controlnets):
    plain = pixels(manager.txt2img(PARAMS, None))
    assert np.array_equal(pixels(run(manager, controlnets, unit("cn-zero"))), plain)
    assert np.array_equal(pixels(run(manager, controlnets, unit(weight=0.0))), plain)
    assert np.array_equal(pixels(run(manager, controlnets, unit(guidance_end=0.0))), plain)
    controlled = run(manager, controlnets, unit())
    assert not np.array_equal(pixels(controlled), plain)
    assert np.array_equal(pixels(manager.txt2img(PARAMS, None)), plain), "the next job has no control left"


def test_the_same_weights_in_every_layout_give_the_same_picture(manager, controlnets):
    pictures = [pixels(run(manager, controlnets, unit(name))) for name in ("cn-diffusers", "cn-ldm", "cn-prefixed")]
    assert np.array_equal(pictures[0], pictures[1]) and np.array_equal(pictures[0], pictures[2])
    # the diff file's weights are rebuilt by an addition: the same picture up to rounding of the weights
    diff = run(manager, controlnets, unit("cn-diff"))
    assert np.abs(pixels(diff).astype(int) - pictures[0].astype(int)).max() <= 2


def test_two_units_add_their_residuals(manager, controlnets):
    one = pixels(run(manager, controlnets, unit(weight=1.0)))
    halves = pixels(run(manager, controlnets, unit(weight=0.5), unit("cn-ldm", weight=0.5)))
    assert np.array_equal(one, halves)


def test_infotext_names_each_unit_as_the_extension_does(manager, controlnets):
    text = run(manager, controlnets, unit(module="canny", weight=0.8)).infotexts[0]
    m = re.search(r'ControlNet 0: "Module: canny, Model: cn-diffusers \[([0-9a-f]{8})\], Weight: 0.8, Resize Mode: '
                  r'Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: '
                  r'0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"', text)
    assert m, text


def test_control_mode_weights_and_the_uncond_branch():
    assert ControlUnit(weight=0.7).checked().layer_weights() == [0.7] * 13
    for mode in CONTROL_MODES[1:]:
        weights = ControlUnit(weight=0.7, control_mode=mode).checked().layer_weights()
        assert weights == pytest.approx([0.7 * 0.825 ** (12 - i) for i in range(13)])
    assert ControlUnit(control_mode=2).checked().control_mode == "ControlNet is more important"

    class Net:  # stands in for a ControlNet: every residual is ones
        dtype = torch.float32

        def __call__(self, x, t, encoder_hidden_states, controlnet_cond, added_cond_kwargs, return_dict):
            return [torch.ones_like(x) for _ in range(12)], torch.ones_like(x)

    call = ControlCall(torch.zeros(4, 4, 8, 8), torch.ones(4), torch.zeros(4, 77, 32), None, parts=1, images=2,
                       step=0, total_steps=3)
    for mode, uncond in ((0, 1.0), (1, 0.825 ** 12), (2, 0.0)):
        prepared = residuals.PreparedUnit(ControlUnit(control_mode=mode).checked(), Net(), "net", hint())
        down, mid, _ = residuals.residual_patch([prepared], 64, 64)(call)
        assert float(down[0][:2].mean()) == pytest.approx(0.825 ** 12 if mode else 1.0)  # the prompt's rows
        assert float(down[0][2:].mean()) == pytest.approx(uncond), mode  # the negative prompt's rows
        assert float(mid[2:].mean()) == pytest.approx(1.0 if mode != 2 else 0.0)


class OnesNet:  # stands in for a ControlNet: residuals of ones at the UNet's three levels (8, 4, 2 latent px)
    dtype = torch.float32

    def __call__(self, x, t, encoder_hidden_states, controlnet_cond, added_cond_kwargs, return_dict):
        sizes = [8] * 4 + [4] * 3 + [2] * 5
        return [torch.ones(x.shape[0], 4, s, s) for s in sizes], torch.ones(x.shape[0], 4, 2, 2)


def test_sdxl_soft_weights_advanced_weighting_and_hires_soft_injection_follow_the_extension():
    # SDXL's 10 residuals take the first 10 of SD1's 13 soft weights (the extension slices, not recomputes)
    soft = ControlUnit(weight=0.5, control_mode=1).checked().layer_weights(10)
    assert soft == pytest.approx([0.5 * 0.825 ** (12 - i) for i in range(10)])
    # the hires pass of a canny (or mlsd) unit is soft whatever its mode; other modules keep Balanced
    assert ControlUnit(module="canny").checked().layer_weights(13, hires=True) == pytest.approx(
        [0.825 ** (12 - i) for i in range(13)])
    assert ControlUnit(module="canny").checked().layer_weights(13) == [1.0] * 13
    assert ControlUnit(module="invert").checked().layer_weights(13, hires=True) == [1.0] * 13
    custom = [0.1 * i for i in range(13)]
    assert ControlUnit(advanced_weighting=custom, control_mode=1).checked().layer_weights(13) == custom
    with pytest.raises(UserError, match="advanced_weighting has 13 weights; this ControlNet has 10 layers"):
        ControlUnit(advanced_weighting=custom).checked().layer_weights(10)
    with pytest.raises(UserError, match="advanced_weighting must be a list"):
        ControlUnit(advanced_weighting="strong").checked()


def test_cfg_resolution_weighting_scales_by_64_over_height_on_the_prompt_branch_only():
    call = ControlCall(torch.zeros(4, 4, 8, 8), torch.ones(4), torch.zeros(4, 77, 32), None, parts=1, images=2,
                       step=0, total_steps=3)
    unit = ControlUnit(weight=0.5, cfg_resolution_weighting=True).checked()
    down, mid, _ = residuals.residual_patch([residuals.PreparedUnit(unit, OnesNet(), "net", hint())], 64, 64)(call)
    assert [float(d[:2].mean()) for d in down] == pytest.approx([0.5 * 64 / s for s in [8] * 4 + [4] * 3 + [2] * 5])
    assert float(mid[:2].mean()) == pytest.approx(0.5 * 32)
    assert all(float(d[2:].abs().max()) == 0 for d in [*down, mid])  # the negative prompt's rows: no control


@pytest.mark.parametrize("fields, message", [
    (dict(weight=3), "weight must be between 0.0 and 2.0"),
    (dict(resize_mode="Stretch"), "resize_mode must be one of"),
    (dict(control_mode=7), "control_mode must be one of"),
    (dict(guidance_start=0.8, guidance_end=0.2), "guidance_start \\(0.8\\) is after guidance_end"),
    (dict(weight="heavy"), "weight must be a number"),
])
def test_unit_mistakes_are_clear(fields, message):
    with pytest.raises(UserError, match=message):
        ControlUnit(**fields).checked()


def test_api_unit_aliases():
    u = ControlUnit.from_dict({"input_image": "x", "lowvram": True, "resize_mode": "Scale to Fit (Inner Fit)",
                               "control_mode": 1, "unknown_field": 5})
    assert (u.image, u.low_vram, u.resize_mode, u.control_mode) == ("x", True, "Crop and Resize",
                                                                     "My prompt is more important")


def test_missing_foreign_and_broken_files_are_named(manager, controlnets):
    with pytest.raises(UserError, match="ControlNet model 'nope' not found"):
        run(manager, controlnets, unit("nope"))
    (controlnets / "notcn.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read ControlNet notcn.safetensors"):
        run(manager, controlnets, unit("notcn"))
    from safetensors.torch import save_file
    save_file({"some.weight": torch.zeros(2)}, str(controlnets / "other.safetensors"))
    with pytest.raises(UserError, match="other.safetensors is not a ControlNet"):
        run(manager, controlnets, unit("other"))
    assert manager.txt2img(PARAMS, None).images


def test_hires_option_and_the_second_pass(manager, controlnets):
    """hr_option: "Low res only" controls the first pass alone, "High res only" the second alone; each differs
    from no control and from the other, and "Both" from either."""
    params = PARAMS.replace(enable_hr=True, hr_scale=2.0, hr_upscaler="Latent", denoising_strength=0.6)
    plain = pixels(manager.txt2img(params, None))
    got = {option: pixels(run(manager, controlnets, unit(hr_option=option), params=params))
           for option in ("Both", "Low res only", "High res only")}
    assert all(image.shape == (128, 128, 3) for image in got.values())
    pictures = [plain, *got.values()]
    assert all(not np.array_equal(a, b) for i, a in enumerate(pictures) for b in pictures[i + 1:])


def test_img2img_unit_without_a_picture_uses_the_init_image(manager, controlnets):
    from webui.scripts import callbacks
    from webui.scripts.extensions import load_scripts
    from webui.scripts.jobs import run_job

    callbacks.clear()
    system = load_scripts(None)
    init = hint()
    request = PARAMS.replace(denoising_strength=0.7)
    args = system.img2img.build_args(None, None, {"ControlNet": {"args": [{"model": "cn-diffusers"}]}})
    without_image = run_job(system, manager, request, None, args=args, init=init, img2img=True)
    args = system.img2img.build_args(None, None, {"ControlNet": {"args": [{"model": "cn-diffusers",
                                                                           "image": init}]}})
    with_image = run_job(system, manager, request, None, args=args, init=init, img2img=True)
    assert np.array_equal(np.asarray(without_image.images[0]), np.asarray(with_image.images[0]))
    callbacks.clear()


@pytest.mark.parametrize("module", ["none", "invert", "canny", "blur_gaussian", "threshold", "scribble_xdog",
                                    "lineart_standard", "tile_resample", "color", "recolor_luminance",
                                    "recolor_intensity", "shuffle", "tile_colorfix", "inpaint", "inpaint_only"])
def test_weightless_preprocessors_make_maps_that_follow_the_picture(module):
    """Each map is an RGB picture at the processor resolution (the picture's short side, for none/invert), black
    for a blank picture where the preprocessor draws lines, and different for a picture with a shape in it."""
    from webui.engine.control import preprocess

    blank = Image.new("RGB", (64, 64), (200, 200, 200))
    shape = hint()
    out_blank = preprocess.run(module, blank, 64)
    out_shape = preprocess.run(module, shape, 64)
    assert out_shape.mode == "RGB" and min(out_shape.size) == 64
    if module in ("canny", "scribble_xdog", "lineart_standard"):
        assert np.asarray(out_blank).max() == 0 and np.asarray(out_shape).max() > 0
    assert not np.array_equal(np.asarray(out_blank), np.asarray(out_shape))
    with pytest.raises(UserError, match="preprocessor 'depth' is not available"):
        preprocess.run("depth", shape)


def test_an_sdxl_controlnet_made_from_the_sdxl_unet(data_dir):
    """SDXL: the ControlNet gets the UNet's pooled text and size ids too; zero zero-convs change nothing, real
    ones change the picture."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from webui.engine.manager import PipelineManager
    from webui.engine.models.tiny import make_tiny_checkpoint

    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    make_tiny_checkpoint(ckpt_dir / "xl.safetensors", seed=3, family="sdxl")
    manager = PipelineManager(ckpt_dir, data_dir, device="cpu")
    manager.load("xl")
    unet = manager.current.components.unet
    folder = data_dir / "models" / "ControlNet"
    folder.mkdir(parents=True)
    net = ControlNetModel.from_unet(unet).float()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "xl-zero.safetensors"))
    torch.manual_seed(4)
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.normal_(0, 0.3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "xl-real.safetensors"))
    plain = pixels(manager.txt2img(PARAMS, None))
    assert np.array_equal(pixels(run(manager, folder, unit("xl-zero"))), plain)
    assert not np.array_equal(pixels(run(manager, folder, unit("xl-real"))), plain)

    # "mid"/"small"-style files: other transformer depths than the UNet's, read from the keys in either layout
    from webui.engine.control import model as control_model

    config = {**dict(net.config), "transformer_layers_per_block": [1, 2]}
    deep = ControlNetModel.from_config(config).float()
    with torch.no_grad():
        for block in [*deep.controlnet_down_blocks, deep.controlnet_mid_block]:
            block.weight.normal_(0, 0.3)
    state = {k: v.contiguous() for k, v in deep.state_dict().items()}
    inputs = (torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0]), torch.randn(2, 5, unet.config.cross_attention_dim))
    added = {"text_embeds": torch.randn(2, unet.config.projection_class_embeddings_input_dim - 6 * 256),
             "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    hint_batch = torch.rand(2, 3, 64, 64)

    def outputs(model):
        down, mid = model(*inputs[:2], encoder_hidden_states=inputs[2], controlnet_cond=hint_batch,
                          added_cond_kwargs=added, return_dict=False)
        return torch.cat([t.flatten() for t in [*down, mid]])

    with torch.no_grad():
        want = outputs(deep)
        for layout_state in (state, {controlnet_key(k, dict(deep.config)): v for k, v in state.items()}):
            got = control_model.build(dict(layout_state), unet, "deep.safetensors").float()
            assert got.config.transformer_layers_per_block == [1, 2]
            assert torch.allclose(outputs(got), want, atol=1e-5)

    # an SD1 ControlNet on this SDXL model: named, before any weight is loaded
    sd1 = ControlNetModel.from_config({**dict(net.config), "addition_embed_type": None, "cross_attention_dim": 32,
                                       "projection_class_embeddings_input_dim": None,
                                       "addition_time_embed_dim": None})
    with pytest.raises(UserError, match="sd1.safetensors is a ControlNet for a model with 32-wide text; the loaded "
                                        "model is SDXL"):
        control_model.build(sd1.state_dict(), unet, "sd1.safetensors")


def test_shuffle_is_drawn_from_the_jobs_seed():
    from webui.engine.control import preprocess

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    one, again, other = (np.asarray(preprocess.run("shuffle", picture, 96, seed=s)) for s in (5, 5, 6))
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    # every pixel is fetched from the picture: a one-colour picture stays that colour
    flat = np.asarray(preprocess.run("shuffle", Image.new("RGB", (96, 96), (10, 200, 30)), 96, seed=5))
    assert (np.abs(flat.astype(int) - (10, 200, 30)) <= 1).all()


def half_mask():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # the right half is to be drawn anew
    return mask


def test_inpaint_maps_mark_the_masked_pixels_and_need_a_mask(controlnets):
    item = residuals.prepare([unit(module="inpaint", mask=half_mask())], controlnets, 64, 64)[0]
    tensor = item.tensor(64, 64, "cpu", torch.float32)
    assert (tensor[..., 32:] == -1).all() and (tensor[..., :32] >= 0).all()
    # a transparent part of the picture is its mask, as the extension's sketch
    rgba = hint().convert("RGBA")
    rgba.putalpha(Image.eval(half_mask(), lambda a: 255 - a))
    item = residuals.prepare([ControlUnit(model="cn-ldm", module="inpaint_only", image=rgba).checked()],
                             controlnets, 64, 64)[0]
    assert (item.tensor(64, 64, "cpu", torch.float32)[..., 32:] == -1).all()
    with pytest.raises(UserError, match="inpaint_only needs a mask"):
        residuals.prepare([unit(module="inpaint_only")], controlnets, 64, 64)


def test_inpaint_only_keeps_the_unmasked_part(manager, controlnets):
    """inpaint_only: two seeds agree outside the mask (it is the control picture) and differ inside; plain
    inpaint does not pin the outside."""
    def picture(module, seed, **kw):
        return pixels(run(manager, controlnets, unit("cn-zero", module=module, mask=half_mask(), **kw),
                          params=PARAMS.replace(seed=seed))).astype(np.float32)

    a, b = picture("inpaint_only", 1), picture("inpaint_only", 2)
    plain_a, plain_b = picture("inpaint", 1), picture("inpaint", 2)
    kept = np.abs(a[:, :20] - b[:, :20]).mean()  # away from the mask's edge; the tiny VAE's decoder sees the
    free = np.abs(plain_a[:, :20] - plain_b[:, :20]).mean()  # whole latent, so a little of the new part leaks
    assert kept < 0.2 * free, (kept, free)
    assert np.abs(a[:, 40:] - b[:, 40:]).mean() > 20



def test_tile_colorfix_takes_the_colour_cast_from_the_control_picture_and_keeps_the_detail(manager, controlnets):
    from webui.engine.control import latent_fix
    from webui.engine.jobs.img2img import encode_picture
    from webui.engine.patches import CFGStep

    components = manager.ensure_model(None).components
    picture = hint()
    ref = encode_picture(components.vae, picture)
    patches = JobPatches()
    item = residuals.PreparedUnit(ControlUnit(module="tile_colorfix", threshold_a=2).checked(), None, "t", picture)
    latent_fix.register(patches, [item], 64, 64)
    for setup in patches.model_setups:
        setup(components)
    (hook,) = patches.after_cfg

    def fixed(x, step=0):
        state = CFGStep(x.clone(), torch.ones(1), step, 4, [], None)
        hook(state)
        return state.x

    assert torch.allclose(fixed(ref), ref, atol=1e-5)  # already the picture's colours: unchanged
    assert torch.allclose(fixed(ref + 0.7), ref, atol=1e-5)  # a colour cast is removed
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0  # finest detail: kept
    out = fixed(ref + 0.5 + checker)[..., 2:-2, 2:-2] - ref[..., 2:-2, 2:-2]  # inside the blur's reach of edges
    assert torch.allclose(out, (checker * (1 - 1 / 25))[2:-2, 2:-2].expand_as(out), atol=1e-5)


def test_a_control_lora_is_the_unets_encoder_plus_its_low_rank_deltas(manager, controlnets):
    """A Control-LoRA (`lora_controlnet`: full hint encoder and zero convs, `X.up`/`X.down` factors over the
    loaded UNet's weights) gives exactly the ControlNet whose weights are UNet + up @ down."""
    from diffusers import ControlNetModel

    from webui.engine.control import model as control_model

    unet = manager.ensure_model(None).components.unet
    net = ControlNetModel.from_unet(unet).float()
    config = dict(net.config)
    torch.manual_seed(8)
    lora = {"lora_controlnet": torch.tensor([])}
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.normal_(0, 0.3)
        shared = {k for k in unet.state_dict()}
        for key, param in net.named_parameters():
            name = controlnet_key(key, config)
            if key in shared and param.ndim >= 2:
                up, down = torch.randn(param.shape[0], 2) * 0.1, torch.randn(2, param[0].numel()) * 0.1
                param.add_((up @ down).reshape(param.shape))
                layer = name.removesuffix(".weight")
                lora[layer + ".up"], lora[layer + ".down"] = up, down
            elif key not in shared or "norm" in key:
                lora[name] = param.detach().clone()  # the file's own tensors: hint encoder, zero convs, norms
    built = control_model.build(lora, unet, "control-lora.safetensors").float()
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([20.0, 700.0]), torch.randn(2, 5, 32)
    cond = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = net(x, t, context, controlnet_cond=cond, return_dict=False)
        got = built(x, t, context, controlnet_cond=cond, return_dict=False)
    for a, b in zip([*want[0], want[1]], [*got[0], got[1]]):
        assert torch.allclose(a, b, atol=1e-5)
    broken = {k: v for k, v in lora.items() if not k.endswith(".down")}
    with pytest.raises(UserError, match="Control-LoRA layer .* has no down factor"):
        control_model.build(broken, unet, "broken.safetensors")


def test_medvram_gives_the_same_controlled_picture(manager, controlnets, data_dir):
    """With the UNet offloaded (weights in RAM, moved to the device to run), the ControlNet follows the latents'
    device; on this CPU-only machine that checks the plumbing: the same pixels."""
    from webui.engine.manager import PipelineManager

    reference = pixels(run(manager, controlnets, unit("cn-ldm")))
    offloaded = PipelineManager(manager.ckpt_dir, data_dir, device="cpu", offload="medvram")
    offloaded.load("tiny")
    assert np.array_equal(pixels(run(offloaded, controlnets, unit("cn-ldm"))), reference)
