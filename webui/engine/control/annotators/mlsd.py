"""Straight lines (mlsd) from `mlsd_large_512_fp32.pth`: NAVER's M-LSD large (Apache-2.0). A MobileNetV2 trunk
(cut after its 96-channel stage) reads RGB plus a constant fourth channel, scaled to −1…1; a feature pyramid
brings it back up to half the picture's size, where it predicts, per pixel, how likely a line's centre is there
and the offsets of that line's two ends. The 200 strongest centres that are local maxima (3×3) and score above
threshold A (value threshold), whose line is longer than threshold B (distance threshold, in half-size pixels),
are drawn as one-pixel white lines on black."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import padded64

TITLE = "M-LSD"
TRUNK = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))  # expansion, width, blocks, stride
TAPS = (1, 3, 6, 10, 13)  # the trunk layers whose outputs the pyramid uses
CANDIDATES = 200


class _ConvBN(nn.Sequential):
    """Convolution (no bias), batch norm, ReLU6; stride 2 pads one pixel right and bottom only, as TFLite."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, 0 if stride == 2 else kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU6())
        self.stride = stride

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.stride == 2 else x)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [_ConvBN(cin, hidden, 1)] if expansion != 1 else []
        layers += [_ConvBN(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [_ConvBN(4, 32, stride=2)], 32
        for expansion, width, blocks, stride in TRUNK:
            for i in range(blocks):
                layers.append(_InvertedResidual(cin, width, stride if i == 0 else 1, expansion))
                cin = width
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                         nn.BatchNorm2d(cout), nn.ReLU())


class _Merge(nn.Module):
    """A skip (`conv2`, 1×1) beside the coarser path (`conv1`, 1×1, then ×2 bilinear unless `upscale` is off)."""

    def __init__(self, skip_in: int, coarse_in: int, upscale: bool = True):
        super().__init__()
        self.conv1 = _conv_bn_relu(coarse_in, 64, 1)
        self.conv2 = _conv_bn_relu(skip_in, 64, 1)
        self.upscale = upscale

    def forward(self, skip, coarse):
        coarse = self.conv1(coarse)
        if self.upscale:
            coarse = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), coarse), dim=1)


class _Refine(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cin, 3)
        self.conv2 = _conv_bn_relu(cin, cout, 3)

    def forward(self, x):
        return self.conv2(self.conv1(x) + x)


class _Head(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cin, 3, dilation=5)
        self.conv2 = _conv_bn_relu(cin, cin, 3)
        self.conv3 = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv3(self.conv2(self.conv1(x)))


class MLSD(nn.Module):
    """The network behind mlsd_large_512_fp32.pth, with its key names (backbone.features.N, block15 … block23)."""

    def __init__(self):
        super().__init__()
        self.backbone = _Trunk()
        self.block15, self.block16 = _Merge(64, 96, upscale=False), _Refine(128, 64)
        self.block17, self.block18 = _Merge(32, 64), _Refine(128, 64)
        self.block19, self.block20 = _Merge(24, 64), _Refine(128, 64)
        self.block21, self.block22 = _Merge(16, 64), _Refine(128, 64)
        self.block23 = _Head(64, 16)

    def forward(self, x):
        """Per half-size pixel: [centre logit, start dx, start dy, end dx, end dy, …] (channels 7… of the head)."""
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def network(state) -> MLSD:
    net = MLSD()
    net.load_state_dict(state, strict=True)
    return net


def segments(net: MLSD, pixels: np.ndarray, value_threshold: float, distance_threshold: float) -> list:
    """The detected lines as (x0, y0, x1, y1) in the picture's pixels (float)."""
    h, w = pixels.shape[:2]
    x = np.concatenate([pixels.astype(np.float32), np.ones((h, w, 1), np.float32)], axis=-1).transpose(2, 0, 1)
    out = net(torch.from_numpy(np.ascontiguousarray(x) / 127.5 - 1.0)[None])[0]
    heat = torch.sigmoid(out[0])
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    scores, where = torch.topk(peaks.flatten(), min(CANDIDATES, peaks.numel()))
    ends = out[1:5].permute(1, 2, 0).numpy()  # start dx, dy, end dx, dy
    lengths = np.sqrt(np.sum((ends[:, :, :2] - ends[:, :, 2:]) ** 2, axis=-1))
    found, width = [], heat.shape[1]
    for score, index in zip(scores.tolist(), where.tolist()):
        cy, cx = divmod(index, width)
        if score > value_threshold and lengths[cy, cx] > distance_threshold:
            dx0, dy0, dx1, dy1 = (float(v) for v in ends[cy, cx])
            found.append((2 * (cx + dx0), 2 * (cy + dy0), 2 * (cx + dx1), 2 * (cy + dy1)))  # half size → full
    return found


def detect(net: MLSD, pixels: np.ndarray, module: str, a, b) -> np.ndarray:
    import cv2

    def lines(picture):
        drawn = np.zeros(picture.shape[:2], np.uint8)
        for x0, y0, x1, y1 in segments(net, picture, a, b):
            cv2.line(drawn, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
        return drawn

    return padded64(pixels, lines)
