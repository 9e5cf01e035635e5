"""Annotator preprocessors: listed only when their file is in models/ControlNet-annotators, a clear message naming
the file otherwise; HED soft edges against controlnet_aux's own HED code (the oracle) on a random network saved
in ControlNetHED.pth's layout."""
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


def test_missing_annotators_are_not_listed_and_name_their_file(tmp_path):
    folder = tmp_path / "ControlNet-annotators"
    assert "softedge_hed" not in preprocess.modules(folder)
    assert "ControlNetHED.pth" in annotators.missing(folder)["softedge_hed"]
    with pytest.raises(UserError, match="softedge_hed needs its annotator file: put ControlNetHED.pth"):
        preprocess.run("softedge_hed", picture(), 128, annotators_dir=folder)


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
