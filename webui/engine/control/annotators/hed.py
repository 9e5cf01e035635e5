"""HED soft edges (softedge_hed, softedge_hedsafe) with lllyasviel's Apache-2.0 HED (`ControlNetHED.pth`): five
VGG-style blocks, each with a 1×1 projection to one edge channel; the five edge maps are upsampled to the picture,
averaged and squashed with a sigmoid ("safe" quantises them to three levels)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

TITLE = "HED"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(convs)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x, pool: bool):
        if pool:
            x = nn.functional.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x, self.projection(x)


class HED(nn.Module):
    """The network behind ControlNetHED.pth, with its key names (norm, blockN.convs.K, blockN.projection)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, convs) in enumerate([(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3),
                                                (512, 512, 3)], start=1):
            self.add_module(f"block{i}", _Block(cin, cout, convs))

    def forward(self, x):
        x, edges = x - self.norm, []
        for i in range(1, 6):
            x, edge = getattr(self, f"block{i}")(x, pool=i > 1)
            edges.append(edge)
        return edges


def network(state) -> HED:
    net = HED()
    net.load_state_dict(state, strict=True)
    return net


def detect(net: HED, pixels: np.ndarray, module: str, a, b) -> np.ndarray:
    import cv2

    h, w = pixels.shape[:2]
    edges = net(torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None])
    maps = [cv2.resize(e[0, 0].numpy().astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for e in edges]
    edge = 1 / (1 + np.exp(-np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)))
    if module == "softedge_hedsafe":  # three levels: 0, 0.5, 1 (× 3, floored, halved)
        edge = np.floor(edge * 3.0) / 2.0
    return (edge * 255.0).clip(0, 255).astype(np.uint8)
