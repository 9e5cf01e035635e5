"""Token merging (ToMe for SD) as A1111 applies it, through the tomesd package: before each self-attention of the
UNet, the most similar tokens are averaged together (a `ratio` share of them), attention runs on fewer tokens and
the result is spread back. Cross-attention and the MLP are left alone and tokens are paired without randomness
(A1111's choices: random pairing "can cause issues with some samplers"), so a job stays reproducible."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def merged(unet, ratio: float | None):
    """`unet` with token merging at `ratio` while the block runs; 0 or None: untouched."""
    if not ratio:
        yield
        return
    import tomesd

    tomesd.apply_patch(unet, ratio=float(ratio), use_rand=False, merge_attn=True, merge_crossattn=False,
                       merge_mlp=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)
