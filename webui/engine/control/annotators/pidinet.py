"""PiDiNet soft edges (softedge_pidinet, softedge_pidisafe) from `table5_pidinet.pth` (Su et al.'s pixel
difference network, its "carv4" table-5 model: 60 base channels, dilation module 24 wide, spatial attention).

Its 3×3 convolutions take differences of pixels rather than pixels, in a repeating pattern of four kinds:
central (each neighbour minus the centre), angular (each neighbour minus the next one clockwise), radial (a ring
two pixels out minus the ring one pixel out: a 5×5 kernel) and a plain convolution. Each is the plain convolution
with a rearranged kernel, which is how they run here. Four stages (the last three halve the size) each give one
edge map (dilated convolutions, attention, a 1×1 reduction), upsampled to the picture and fused by a 1×1
convolution into a sigmoid edge probability. It reads BGR in 0…1; "safe" quantises to 0, ½, 1 as the extension."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import padded64

TITLE = "PiDiNet"
KINDS = ("central", "angular", "radial", "plain") * 4  # layer 0 (the first convolution) … layer 15
CLOCKWISE_PREVIOUS = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # for each cell of a 3×3 kernel, the one before it clockwise
RING_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]  # where a 3×3 kernel's 8 neighbours land in a 5×5 one, two pixels out
RING_INNER = [6, 7, 8, 11, 13, 16, 17, 18]  # … and one pixel out


def difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The plain convolution kernel (and its padding) a pixel difference convolution with `weight` amounts to."""
    if kind == "plain":
        return weight, 1
    if kind == "central":  # Σ w·(x_i − x_centre)
        kernel = weight.clone()
        kernel[:, :, 1, 1] -= weight.sum(dim=(2, 3))
        return kernel, 1
    flat = weight.flatten(2)
    if kind == "angular":  # Σ w_i·(x_i − x_previous(i))
        return (flat - flat[:, :, CLOCKWISE_PREVIOUS]).view_as(weight), 1
    ring = flat.new_zeros(*flat.shape[:2], 25)  # radial: Σ w_i·(x_outer(i) − x_inner(i)), centre weight unused
    ring[:, :, RING_OUTER] = flat[:, :, 1:]
    ring[:, :, RING_INNER] = -flat[:, :, 1:]
    return ring.view(*flat.shape[:2], 5, 5), 2


class _DifferenceConv(nn.Module):
    def __init__(self, kind: str, cin: int, cout: int, groups: int = 1):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.zeros(cout, cin // groups, 3, 3))

    def forward(self, x):
        kernel, padding = difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class _Block(nn.Module):
    """Depthwise difference convolution, ReLU, 1×1 convolution, plus the input (a stride-2 block max-pools first
    and projects the input with a 1×1 `shortcut`)."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        self.conv1 = _DifferenceConv(kind, cin, cin, groups=cin)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(torch.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class _Dilations(nn.Module):
    """CDCM: ReLU, 1×1 to 24 channels, the sum of four 3×3 convolutions dilated 5, 7, 9 and 11."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for i, dilation in enumerate((5, 7, 9, 11), start=1):
            self.add_module(f"conv2_{i}", nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False))

    def forward(self, x):
        x = self.conv1(torch.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, 5))


class _Attention(nn.Module):
    """CSAM: the input times a sigmoid mask made by ReLU, 1×1 to 4 channels, 3×3 to one."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.conv2(self.conv1(torch.relu(x))))


class _Reduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x):
        return self.conv(x)


class PiDiNet(nn.Module):
    """The network behind table5_pidinet.pth, with its key names (init_block, blockS_N, dilations, attentions,
    conv_reduces, classifier)."""

    STAGES = ((1, 3), (2, 4), (3, 4), (4, 4))  # stage, blocks

    def __init__(self, channels: int = 60, dilation: int = 24):
        super().__init__()
        self.init_block = _DifferenceConv(KINDS[0], 3, channels)
        widths, layer, cin = [], 1, channels
        for stage, blocks in self.STAGES:
            cout = channels * min(2 ** (stage - 1), 4)
            for n in range(1, blocks + 1):
                first_of_later_stage = n == 1 and stage > 1
                self.add_module(f"block{stage}_{n}", _Block(KINDS[layer], cin if n == 1 else cout, cout,
                                                            stride=2 if first_of_later_stage else 1))
                layer += 1
            widths.append(cout)
            cin = cout
        self.dilations = nn.ModuleList(_Dilations(w, dilation) for w in widths)
        self.attentions = nn.ModuleList(_Attention(dilation) for _ in widths)
        self.conv_reduces = nn.ModuleList(_Reduce(dilation) for _ in widths)
        self.classifier = nn.Conv2d(len(widths), 1, 1)

    def forward(self, x):
        """The fused edge probability (1×1×H×W)."""
        h, w = x.shape[2:]
        x, edges = self.init_block(x), []
        for i, (stage, blocks) in enumerate(self.STAGES):
            for n in range(1, blocks + 1):
                x = getattr(self, f"block{stage}_{n}")(x)
            edge = self.conv_reduces[i](self.attentions[i](self.dilations[i](x)))
            edges.append(F.interpolate(edge, (h, w), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(edges, dim=1)))


def network(state) -> PiDiNet:
    if isinstance(state, dict) and "state_dict" in state:  # the training checkpoint: {"state_dict": …, …}
        state = state["state_dict"]
    net = PiDiNet()
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    return net


def detect(net: PiDiNet, pixels: np.ndarray, module: str, a, b) -> np.ndarray:
    def edges(picture):
        bgr = np.ascontiguousarray(picture[:, :, ::-1]).astype(np.float32) / 255.0
        edge = net(torch.from_numpy(bgr).permute(2, 0, 1)[None])[0, 0].numpy()
        if module == "softedge_pidisafe":  # three levels: 0, 0.5, 1 (× 3, truncated, halved)
            edge = (edge * 3.0).astype(np.int32).astype(np.float32) / 2.0
        return (edge * 255.0).clip(0, 255).astype(np.uint8)

    return padded64(pixels, edges)
