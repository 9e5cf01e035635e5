"""Line art (lineart_realistic from `sk_model.pth`, lineart_coarse from `sk_model2.pth`): the informative-drawings
generator (Chan, Durand and Isola's "Learning to generate line drawings"). A 7×7 stem, two stride-2
downsamplings (64 → 128 → 256 channels), three residual blocks, two transposed-conv upsamplings and a 7×7 head to
one sigmoid channel, instance norm (no weights) throughout. It draws dark lines on white from RGB in 0…1; the
map is that inverted: white lines on black."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import padded64

TITLE = "line art"


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU()]


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), *_norm_relu(channels),
                                        nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                        nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.conv_block(x)


class Lineart(nn.Module):
    """The network behind sk_model.pth / sk_model2.pth, with its key names (model0 … model4)."""

    def __init__(self, residual_blocks: int = 3):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), *_norm_relu(64))
        self.model1 = nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), *_norm_relu(128),
                                    nn.Conv2d(128, 256, 3, stride=2, padding=1), *_norm_relu(256))
        self.model2 = nn.Sequential(*[_Residual(256) for _ in range(residual_blocks)])
        self.model3 = nn.Sequential(nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1),
                                    *_norm_relu(128),
                                    nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
                                    *_norm_relu(64))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x):
        for part in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = part(x)
        return x


def network(state) -> Lineart:
    net = Lineart()
    net.load_state_dict(state, strict=True)
    return net


def detect(net: Lineart, pixels: np.ndarray, module: str, a, b) -> np.ndarray:
    def lines(picture):
        x = torch.from_numpy(picture.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        drawn = (net(x)[0, 0].numpy() * 255.0).clip(0, 255).astype(np.uint8)  # dark lines on white
        return 255 - drawn

    return padded64(pixels, lines)
