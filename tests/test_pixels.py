"""Decoded images become 8-bit pixels as A1111 and ComfyUI make them: clamp((x + 1) / 2, 0, 1) · 255, truncated."""
import numpy as np
import torch

from webui.engine.jobs.decode import to_pixels


def test_known_values_are_truncated_not_rounded():
    values = [-1.5, -1.0, -0.999, 0.0, 0.0039, 0.5, 0.99, 0.999, 1.0, 2.0]
    # (x + 1) / 2 · 255 = 0, 0, 0.1275, 127.5, 127.997…, 191.25, 253.725, 254.87…, 255, 255 (clamped)
    expected = [0, 0, 0, 127, 127, 191, 253, 254, 255, 255]
    decoded = torch.tensor(values).view(1, 1, -1).expand(3, 1, -1)  # (3, H=1, W)
    pixels = to_pixels(decoded)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, len(values), 3)
    assert pixels[0, :, 0].tolist() == expected
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_channels_stay_in_place_and_half_precision_is_widened_first():
    decoded = torch.stack([torch.full((2, 2), -1.0), torch.zeros(2, 2), torch.ones(2, 2)]).half()
    assert to_pixels(decoded)[0, 0].tolist() == [0, 127, 255]
