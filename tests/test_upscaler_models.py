"""Upscaler model files through spandrel: small random ESRGAN (original "old" layout) and Real-ESRGAN Compact
models, as users drop them in models/ESRGAN and models/RealESRGAN, used by Extras and hires fix."""
from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small
from webui.engine.errors import UserError
from webui.engine.imaging.upscaler_models import UpscalerModels, run_tiled, spandrel


def esrgan():
    spandrel()
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet
    torch.manual_seed(1)
    return RRDBNet(num_filters=8, num_blocks=1, scale=2).eval()


def compact():
    spandrel()
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact
    torch.manual_seed(2)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).eval()


@pytest.fixture
def models_dir(data_dir):
    from safetensors.torch import save_file

    (data_dir / "models" / "ESRGAN").mkdir(parents=True)
    (data_dir / "models" / "RealESRGAN").mkdir(parents=True)
    torch.save(esrgan().state_dict(), data_dir / "models" / "ESRGAN" / "tiny-esrgan.pth")
    save_file({k: v.contiguous() for k, v in compact().state_dict().items()},
              str(data_dir / "models" / "RealESRGAN" / "tiny-compact.safetensors"))
    return data_dir / "models"


def picture(size=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def expected(module, image):
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = module(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return (out * 255.0).round().astype(np.uint8)


def test_models_are_listed_and_run_as_their_architecture_does(models_dir):
    library = UpscalerModels(models_dir)
    assert library.names() == ["tiny-esrgan", "tiny-compact"]
    image = picture()
    for name, module in (("tiny-esrgan", esrgan()), ("tiny-compact", compact())):
        out = library.upscale(image, name)
        assert out.size == (96, 96)
        assert np.array_equal(np.asarray(out), expected(module, image)), name
    assert "torchvision" not in sys.modules or hasattr(sys.modules["torchvision"], "__file__")


def test_tiles_blend_to_nearly_the_whole_picture(models_dir):
    model = UpscalerModels(models_dir).load("tiny-compact")
    x = torch.rand(1, 3, 80, 72)
    whole = run_tiled(model, x, 2, tile=0, overlap=0)
    tiled = run_tiled(model, x, 2, tile=32, overlap=12)
    assert tiled.shape == whole.shape == (1, 3, 160, 144)
    assert (tiled - whole).abs().mean() < 0.01


def test_extras_and_hires_fix_use_a_model_upscaler(manager, models_dir):
    from webui.engine.jobs.extras import ExtrasParams

    result = manager.extras([(picture(64), None)], ExtrasParams(upscaler_1="tiny-compact", upscaling_resize=2.0),
                            None)
    assert result.images[0].size == (128, 128)
    assert "Postprocess upscaler: tiny-compact" in result.infotexts[0]
    from webui.engine.imaging import upscalers
    assert np.array_equal(np.asarray(result.images[0]),
                          np.asarray(upscalers.upscale(picture(64), "tiny-compact", 2.0, manager.upscaler_models)))
    hires = manager.txt2img(small(steps=2, seed=4, enable_hr=True, hr_upscaler="tiny-esrgan", hr_scale=2.0,
                                  denoising_strength=0.5), None)
    assert hires.images[0].size == (128, 128) and "Hires upscaler: tiny-esrgan" in hires.infotexts[0]
    lanczos = manager.txt2img(small(steps=2, seed=4, enable_hr=True, hr_upscaler="Lanczos", hr_scale=2.0,
                                    denoising_strength=0.5), None)
    assert not np.array_equal(np.asarray(hires.images[0]), np.asarray(lanczos.images[0]))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_broken_and_unsafe_files_are_clear_errors(manager, models_dir, capsys):
    from webui.engine.jobs.extras import ExtrasParams

    (models_dir / "ESRGAN" / "broken.pth").write_bytes(b"not a model at all")
    with open(models_dir / "ESRGAN" / "evil.pth", "wb") as f:
        pickle.dump({"model.0.weight": Evil()}, f)
    for name in ("broken", "evil"):
        with pytest.raises(UserError, match=f"cannot load upscaler {name}.pth"):
            manager.extras([(picture(32), None)], ExtrasParams(upscaler_1=name), None)
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(UserError, match="could not find upscaler named 'nope'"):
        manager.extras([(picture(32), None)], ExtrasParams(upscaler_1="nope"), None)
    assert manager.extras([(picture(32), None)], ExtrasParams(upscaler_1="tiny-compact"), None).images
