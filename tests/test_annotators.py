"""Annotator preprocessors: listed only when their file is in models/ControlNet-annotators, a clear message naming
the file otherwise; each against controlnet_aux's own detector code (the oracle) on a random network of the
original class (seeded), saved in its file's layout: HED and PiDiNet soft edges, line art (realistic, coarse,
anime) and M-LSD lines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from oracle.originals import load_controlnet_aux
from webui.engine.control import annotators, preprocess
from webui.engine.errors import UserError


def picture(size=128):
    image = Image.new("RGB", (size, size), (30, 40, 200))
    image.paste((250, 240, 20), (20, 30, 90, 100))
    return image


@pytest.fixture
def hed_file(tmp_path):
    hed = load_controlnet_aux("hed")
    torch.manual_seed(0)
    net = hed.ControlNetHED_Apache2()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    folder = tmp_path / "ControlNet-annotators"
    (folder / "downloads" / "hed").mkdir(parents=True)
    torch.save(net.state_dict(), folder / "downloads" / "hed" / "ControlNetHED.pth")
    return folder, hed.HEDdetector(net.float().eval())


FILES = {"softedge_hed": "ControlNetHED.pth", "softedge_hedsafe": "ControlNetHED.pth",
         "softedge_pidinet": "table5_pidinet.pth", "softedge_pidisafe": "table5_pidinet.pth",
         "lineart_realistic": "sk_model.pth", "lineart_coarse": "sk_model2.pth", "lineart_anime": "netG.pth",
         "mlsd": "mlsd_large_512_fp32.pth"}


@pytest.mark.parametrize("module", FILES)
def test_missing_annotators_are_not_listed_and_name_their_file(tmp_path, module):
    folder, file = tmp_path / "ControlNet-annotators", FILES[module]
    assert module not in preprocess.modules(folder)
    assert f"put {file} (from lllyasviel/Annotators" in annotators.missing(folder)[module]
    with pytest.raises(UserError, match=rf"{module} needs its annotator file: put {file}"):
        preprocess.run(module, picture(), 128, annotators_dir=folder)


@pytest.mark.parametrize("module, safe", [("softedge_hed", False), ("softedge_hedsafe", True)])
def test_hed_matches_controlnet_aux(hed_file, module, safe):
    folder, oracle = hed_file
    assert module in preprocess.modules(folder)
    ours = np.asarray(preprocess.run(module, picture(), 128, annotators_dir=folder))
    want = oracle(np.asarray(picture()), detect_resolution=128, image_resolution=128, safe=safe, output_type="np")
    assert ours.shape == want.shape
    assert np.abs(ours.astype(int) - want.astype(int)).max() <= 1
    assert len(np.unique(ours)) > 2 or safe  # a real soft map, not a constant


def test_a_broken_annotator_file_is_a_user_error(tmp_path):
    folder = tmp_path / "ControlNet-annotators"
    folder.mkdir()
    torch.save({"something": torch.zeros(1)}, folder / "ControlNetHED.pth")
    with pytest.raises(UserError, match="cannot use ControlNetHED.pth as the HED annotator"):
        preprocess.run("softedge_hed", picture(), 128, annotators_dir=folder)


def save(tmp_path, file: str, state):
    folder = tmp_path / "ControlNet-annotators"
    (folder / "downloads").mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "downloads" / file)
    return folder


def same_map(ours, want, tolerance=1):
    ours = np.asarray(ours)
    assert ours.shape == want.shape
    assert np.abs(ours.astype(int) - want.astype(int)).max() <= tolerance


def padded(pixels: np.ndarray) -> np.ndarray:
    """The extension's resize_image_with_pad padding: edge pixels repeated to multiples of 64, right and bottom."""
    h, w = pixels.shape[:2]
    return np.pad(pixels, [[0, -h % 64], [0, -w % 64], [0, 0]], mode="edge")


def wide_picture():
    """96×64: not a multiple of 64 wide, so the network sees it padded (as the extension pads) and the map is
    cropped back."""
    image = Image.new("RGB", (96, 64), (200, 60, 40))
    image.paste((20, 240, 230), (10, 8, 70, 40))
    image.paste((0, 0, 0), (40, 20, 44, 60))
    return image


@pytest.mark.parametrize("module, coarse", [("lineart_realistic", False), ("lineart_coarse", True)])
def test_lineart_matches_controlnet_aux(tmp_path, module, coarse):
    lineart = load_controlnet_aux("lineart")
    torch.manual_seed(1)
    net = lineart.Generator(3, 1, 3).eval()
    folder = save(tmp_path, "sk_model2.pth" if coarse else "sk_model.pth", net.state_dict())
    other = "lineart_realistic" if coarse else "lineart_coarse"
    assert module in preprocess.modules(folder) and other not in preprocess.modules(folder)
    oracle = lineart.LineartDetector(net, net)
    ours = np.asarray(preprocess.run(module, picture(64), 64, annotators_dir=folder))
    same_map(ours, oracle(np.asarray(picture(64)), coarse=coarse, detect_resolution=64, image_resolution=64,
                          output_type="np"))
    assert len(np.unique(ours)) > 8
    wide = np.asarray(preprocess.run(module, wide_picture(), 64, annotators_dir=folder))
    want = oracle(padded(np.asarray(wide_picture())), coarse=coarse, detect_resolution=64, image_resolution=64,
                  output_type="np")[:64, :96]
    same_map(wide, want)


@pytest.fixture(scope="module")
def pidinet_state():
    pidi = load_controlnet_aux("pidi")
    torch.manual_seed(2)
    net = pidi.model.pidinet().eval()
    with torch.no_grad():  # fused edges spread over 0…1 (as initialised they sit at 0.5 ± 0.01)
        net.classifier.weight.mul_(20)
        for reduce in net.conv_reduces:
            reduce.conv.weight.mul_(20)
    # the real file is the training checkpoint: {"state_dict": {"module.<key>": …}, …}
    return {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, \
        pidi.PidiNetDetector(net)


@pytest.mark.parametrize("module, safe", [("softedge_pidinet", False), ("softedge_pidisafe", True)])
def test_pidinet_matches_controlnet_aux(tmp_path, pidinet_state, module, safe):
    state, oracle = pidinet_state
    folder = save(tmp_path, "table5_pidinet.pth", state)
    assert {"softedge_pidinet", "softedge_pidisafe"} <= set(preprocess.modules(folder))
    ours = np.asarray(preprocess.run(module, picture(64), 64, annotators_dir=folder))
    same_map(ours, oracle(np.asarray(picture(64)), detect_resolution=64, image_resolution=64, safe=safe,
                          output_type="np"))
    levels = len(np.unique(ours))
    assert (levels == 3) if safe else (levels > 8)
    wide = np.asarray(preprocess.run(module, wide_picture(), 64, annotators_dir=folder))
    want = oracle(padded(np.asarray(wide_picture())), detect_resolution=64, image_resolution=64, safe=safe,
                  output_type="np")[:64, :96]
    same_map(wide, want)


def textured(width: int, height: int, seed: int) -> Image.Image:
    """Blurred noise: no flat areas, so a random M-LSD has no tied line candidates (which one of a tie makes the
    200 strongest would be up to float noise, in the oracle as here)."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(cv2.GaussianBlur(noise, (0, 0), 1.5))


@pytest.fixture(scope="module")
def mlsd_net():
    mlsd = load_controlnet_aux("mlsd")
    torch.manual_seed(3)
    net = mlsd.MobileV2_MLSD_Large()
    with torch.no_grad():  # batch norms with statistics of their own, so eval-mode normalisation is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        net.block23.conv3.weight.mul_(20)  # centre scores 0.75…0.91, lines 1.3…2.5 half-size pixels long
    return net.eval(), mlsd


def oracle_segments(mlsd, net, pixels, a, b):
    try:
        return mlsd.utils.pred_lines(pixels, net, list(pixels.shape[:2]), a, b)
    except IndexError:  # no line: its own detector catches this too and draws nothing
        return np.zeros((0, 4))


@pytest.mark.parametrize("a, b, thr_v, thr_d", [(-1, -1, 0.1, 0.1), (0.88, 0.1, 0.88, 0.1), (0.1, 1.8, 0.1, 1.8)])
@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_mlsd_matches_controlnet_aux(tmp_path, mlsd_net, a, b, thr_v, thr_d, size):
    """The same lines (to 1e-3 px) and the same drawing; a line end within float noise of a pixel boundary may
    land one pixel over, so up to 1% of the line pixels may differ (none do here)."""
    from webui.engine.control.annotators import mlsd as ours_mlsd

    net, mlsd = mlsd_net
    folder = save(tmp_path, "mlsd_large_512_fp32.pth", net.state_dict())
    image = textured(*size, seed=size[0])
    ours = np.asarray(preprocess.run("mlsd", image, 64, a, b, annotators_dir=folder))
    seen = padded(np.asarray(image))  # what both networks see: the extension's padding to multiples of 64
    want = mlsd.MLSDdetector(net)(seen, thr_v=thr_v, thr_d=thr_d, detect_resolution=64, image_resolution=64,
                                  output_type="np")[:size[1], :size[0]]
    assert (want == 255).sum() > 20, "the oracle drew (almost) no lines: the test would prove nothing"
    assert ours.shape == want.shape and set(np.unique(ours)) <= {0, 255}
    assert (ours != want).any(axis=2).sum() <= 0.01 * (want == 255).any(axis=2).sum()
    theirs = np.array(sorted(map(tuple, oracle_segments(mlsd, net, seen, thr_v, thr_d))))
    with torch.no_grad():
        found = np.array(sorted(ours_mlsd.segments(ours_mlsd.network(net.state_dict()).eval(), seen, thr_v, thr_d)))
    assert found.shape == theirs.shape and np.abs(found - theirs).max() < 1e-3


def test_mlsd_thresholds_drop_weak_and_short_lines(tmp_path, mlsd_net):
    folder = save(tmp_path, "mlsd_large_512_fp32.pth", mlsd_net[0].state_dict())
    image = textured(64, 64, seed=64)

    def lit(a, b):
        return np.asarray(preprocess.run("mlsd", image, 64, a, b, annotators_dir=folder))[:, :, 0] > 0

    every, strong, long = lit(0.1, 0.1), lit(0.89, 0.1), lit(0.1, 2.0)
    assert (every >= strong).all() and every.sum() > strong.sum() > 0
    assert (every >= long).all() and every.sum() > long.sum() > 0
    assert not lit(0.95, 0.1).any() and not lit(0.1, 3.0).any()


def test_lineart_anime_matches_controlnet_aux(tmp_path):
    import functools

    anime = load_controlnet_aux("lineart_anime")
    torch.manual_seed(4)
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = anime.UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False).eval()
    folder = save(tmp_path, "netG.pth", net.state_dict())
    ours = np.asarray(preprocess.run("lineart_anime", picture(64), 64, annotators_dir=folder))
    same_map(ours, anime.LineartAnimeDetector(net)(np.asarray(picture(64)), detect_resolution=64,
                                                   image_resolution=64, output_type="np"))
    assert len(np.unique(ours)) > 8


@pytest.mark.parametrize("module, file, title", [("softedge_pidinet", "table5_pidinet.pth", "PiDiNet"),
                                                 ("lineart_realistic", "sk_model.pth", "line art"),
                                                 ("lineart_anime", "netG.pth", "anime line art"),
                                                 ("mlsd", "mlsd_large_512_fp32.pth", "M-LSD")])
def test_a_wrong_file_is_a_user_error_naming_it(tmp_path, module, file, title):
    folder = save(tmp_path, file, {"something": torch.zeros(1)})
    with pytest.raises(UserError, match=f"cannot use {file} as the {title} annotator: RuntimeError"):
        preprocess.run(module, picture(64), 64, annotators_dir=folder)
    (folder / "downloads" / file).write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=f"cannot use {file} as the {title} annotator"):
        preprocess.run(module, picture(64), 64, annotators_dir=folder)


def test_an_annotators_default_thresholds_are_what_the_infotext_records():
    from webui.engine.control import residuals
    from webui.engine.control.units import ControlUnit

    unit = ControlUnit(module="mlsd").checked()
    _, text = residuals.infotext(0, residuals.PreparedUnit(unit, None, "m [12345678]", None))
    assert "Threshold A: 0.1, Threshold B: 0.1" in text
    assert preprocess.thresholds("mlsd", 0.5, -1) == (0.5, 0.1)
    assert preprocess.thresholds("canny", -1, 150) == (100, 150)
