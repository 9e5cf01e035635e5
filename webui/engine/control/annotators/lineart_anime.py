"""Anime line art (lineart_anime) from `netG.pth`: a pix2pix-style U-Net (eight stride-2 4×4 convolutions down to
1/256 of the picture, 64 → 512 channels, and eight transposed ones back up, each level's input concatenated to its
output; instance norm without weights, LeakyReLU 0.2 down, ReLU up, tanh out). The picture is stretched (cubic)
to multiples of 256, read as RGB in −1…1; the drawing (dark lines on white) is brought back (cubic) and inverted:
white lines on black."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import padded64

TITLE = "anime line art"
LEVELS = (64, 128, 256, 512, 512, 512, 512, 512)  # channels after each downsampling, outermost first


class _Level(nn.Module):
    """One U-Net level: `model` is [down…, inner level, up…]; all but the outermost return input ⧺ output."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, cin: int | None = None):
        super().__init__()
        self.outermost = cin is not None
        down = nn.Conv2d(cin or outer, inner, 4, stride=2, padding=1)
        if self.outermost:
            layers = [down, sub, nn.ReLU(), nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1), nn.Tanh()]
        elif sub is None:  # innermost
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1),
                      nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, nn.InstanceNorm2d(inner), sub, nn.ReLU(),
                      nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1), nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], dim=1)


class LineartAnime(nn.Module):
    """The network behind netG.pth, with its key names (model.model.0, model.model.1.model.1, …)."""

    def __init__(self):
        super().__init__()
        level = None
        for outer, inner in reversed(list(zip(LEVELS[:-1], LEVELS[1:]))):  # (512, 512) innermost … (64, 128)
            level = _Level(outer, inner, level)
        self.model = _Level(1, LEVELS[0], level, cin=3)

    def forward(self, x):
        return self.model(x)


def network(state) -> LineartAnime:
    net = LineartAnime()
    net.load_state_dict({k.replace("module.", ""): v for k, v in state.items()}, strict=True)
    return net


def detect(net: LineartAnime, pixels: np.ndarray, module: str, a, b) -> np.ndarray:
    import cv2

    def lines(picture):
        h, w = picture.shape[:2]
        stretched = cv2.resize(picture, (-(-w // 256) * 256, -(-h // 256) * 256), interpolation=cv2.INTER_CUBIC)
        x = torch.from_numpy(stretched).float().permute(2, 0, 1)[None] / 127.5 - 1.0
        drawn = (net(x)[0, 0] * 127.5 + 127.5).numpy()
        drawn = cv2.resize(drawn, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
        return 255 - drawn

    return padded64(pixels, lines)
