"""Inpainting masks, the image side: preparation, the "Only masked" crop region, masked-content "fill",
the latent mask, and pasting the result back over the original.

Pure PIL + numpy/scipy. Behaviour follows AUTOMATIC1111 1.10 (`modules/processing.py`
StableDiffusionProcessingImg2Img.init / apply_overlay / create_binary_mask, `modules/masking.py`).

The A1111 pipeline these pieces make up (white = area to regenerate):

    mask = prepare_mask(upload, init.size, blur_x, blur_y, invert)          # binarise, invert, blur
    Only masked:   region = get_crop_region(mask, padding)  (None: blank mask -> plain img2img, no mask)
                   region = expand_crop_region(region, W, H, *init.size)
                   image  = crop_to_region(init, region, W, H); mask_p = crop_to_region(mask, region, W, H)
    Whole picture: image  = resize_image(mode, init, W, H); mask_p = resize_image(mode, mask, W, H)
                   region = None; and `original`/`mask` below are these resized versions
    masked content "fill": image = fill(image, mask_p); other contents work on latent_mask(mask_p, ...)
    after decoding:  result = composite(original, generated, mask, region)
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy.ndimage import correlate1d

from .ops import LANCZOS, RESIZE_AND_FILL, as_8bit, resize_image

Region = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive, like PIL's crop box


# --- preparation ----------------------------------------------------------------------------------


def mask_to_l(mask: Image.Image, mask_round: bool = True) -> Image.Image:
    """Any mode -> "L" as A1111's create_binary_mask: an RGBA mask whose alpha is not fully opaque is a
    browser sketch, so its alpha channel is the mask (thresholded at >128 when mask_round, A1111's
    default setting); anything else is converted to greyscale. Modes with other kinds of transparency
    (LA, PA, P/L/RGB with a transparent colour) are taken as RGBA first, as Gradio hands them to A1111."""
    mask = as_8bit(mask)
    if mask.mode in ("LA", "PA", "RGBa", "La") or (mask.mode != "RGBA" and "transparency" in mask.info):
        mask = mask.convert("RGBA")
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        alpha = mask.getchannel("A")
        return alpha.point(lambda v: 255 if v > 128 else 0) if mask_round else alpha
    return mask.convert("L")


def _cv2_fixed_kernel(sigma: float) -> np.ndarray:
    """The integer taps (summing to 256) OpenCV's bit-exact 8-bit GaussianBlur uses for A1111's kernel size
    2*int(2.5*sigma + 0.5) + 1: normalised Gaussian weights, quantised to 1/256 with the rounding error
    carried from tap to tap, outside in, and the centre tap taking the remainder."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    half = size // 2
    weights = [math.exp(-((i - half) ** 2) / (2.0 * sigma * sigma)) for i in range(half)]
    scale = 1.0 / (2.0 * sum(weights) + 1.0)
    taps = np.zeros(size, dtype=np.int64)
    carry = 0.0
    for i, w in enumerate(weights):
        exact = w * scale * 256.0 + carry
        taps[i] = taps[size - 1 - i] = round(exact)  # round half to even, as cvRound
        carry = exact - taps[i]
    taps[half] = 256 - 2 * int(taps[:half].sum())
    return taps


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """A1111's mask blur: cv2.GaussianBlur along x (sigma blur_x), then separately along y (blur_y).

    Reproduces OpenCV's fixed-point path for 8-bit images (the one A1111 gets): integer taps from
    _cv2_fixed_kernel, reflect-101 border (scipy's "mirror"), the sum rounded half up back to 8 bits after
    each pass. Bit-identical to opencv-python 5.0 in randomised comparisons (blur 0-64, 1-200 px images)."""
    a = np.asarray(mask.convert("L"), dtype=np.int64)
    for sigma, axis in ((blur_x, 1), (blur_y, 0)):
        if sigma and sigma > 0:
            acc = correlate1d(a, _cv2_fixed_kernel(float(sigma)), axis=axis, mode="mirror")
            a = (acc + 128) >> 8
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur_x: float, blur_y: float, invert: bool,
                 mask_round: bool = True) -> Image.Image:
    """The mask as A1111 uses it, in "L" at `size` (the init image's size): binarised (mask_to_l), inverted
    for "Inpaint not masked", blurred, then stretched to `size` if it differs.

    A1111 blurs at the mask's own resolution and only resizes it later with the resize mode (whole
    picture) or not at all ("Only masked", where a mismatched mask gives a wrong crop). Stretching it onto
    the image keeps the mask where it was drawn in both cases."""
    mask = mask_to_l(mask, mask_round)
    if invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, blur_x, blur_y)
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), resample=LANCZOS)
    return mask


def is_empty(mask: Image.Image) -> bool:
    """True when no pixel is masked (all zero)."""
    return mask.convert("L").getbbox() is None


# --- "Only masked" --------------------------------------------------------------------------------


def get_crop_region(mask: Image.Image, pad: int = 0) -> Region | None:
    """The bounding box of the masked (non-zero) pixels grown by `pad` on each side and clamped to the
    image (A1111's get_crop_region_v2). None for a blank mask: A1111 then drops the mask and runs plain
    img2img ("Unable to perform Inpaint Only mask because mask is blank")."""
    mask = mask.convert("L")
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(region: Region, target_w: int, target_h: int, image_w: int, image_h: int) -> Region:
    """Grow the short side of `region` (around its centre) to the target_w:target_h aspect, shifting it
    back inside the image when it spills over; if the image is too small it is clamped and the aspect is
    then not kept exactly (A1111's expand_crop_region, same integer arithmetic)."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > target_w / target_h:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / (target_w / target_h) - (y2 - y1)), image_h)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * (target_w / target_h) - (x2 - x1)), image_w)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, extra: int, limit: int) -> tuple[int, int]:
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    if hi >= limit:  # spilled past the far edge: slide back
        lo, hi = lo - (hi - limit), limit
    if lo < 0:  # spilled past the near edge: slide forward
        lo, hi = 0, hi - lo
    return lo, min(hi, limit)


def crop_to_region(img: Image.Image, region: Region, width: int, height: int) -> Image.Image:
    """The region cut out and fitted to the processing size with "Resize and fill", as A1111 does for both
    the image and the mask in "Only masked" mode."""
    return resize_image(RESIZE_AND_FILL, img.crop(region), width, height)


# --- masked content -------------------------------------------------------------------------------


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area is painted with the surrounding colours, by
    compositing ever less blurred copies of the unmasked pixels (premultiplied, so the hole does not
    darken the blur) over each other. The last layer is unblurred, so unmasked pixels come back unchanged."""
    keep = Image.new("RGBa", image.size)
    keep.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = keep.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(layer)
    return out.convert("RGB")


def latent_mask(mask: Image.Image, latent_w: int, latent_h: int, mask_round: bool = True) -> np.ndarray:
    """The processing-size mask at latent size as float32 (latent_h, latent_w), 1 = regenerate: resized
    bicubic (PIL's default, as A1111) and rounded to 0/1 when mask_round (A1111's np.around)."""
    small = mask.convert("L").resize((latent_w, latent_h), resample=Image.Resampling.BICUBIC)
    a = np.asarray(small, dtype=np.float32) / 255.0
    return np.around(a) if mask_round else a


# --- putting the result back ----------------------------------------------------------------------


def mask_for_overlay(mask: Image.Image, only_masked: bool) -> Image.Image:
    """The alpha A1111 pastes the generated image with. "Only masked" uses the blurred mask as it is;
    "Whole picture" doubles it (clipped), so the generated image shows fully over the inner half of the
    blurred edge."""
    mask = mask.convert("L")
    if only_masked:
        return mask
    return mask.point(lambda v: min(255, 2 * v))


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image,
              region: Region | None = None) -> Image.Image:
    """A1111's overlay: the original where the mask is 0, the generated image where it is 255, blended in
    between, as RGB at the original's size.

    original: the image the mask refers to (whole picture: the init image after resize_image; only masked:
    the init image at its own size). mask: prepare_mask's result at that size (whole picture: resized the
    same way). region: the expanded crop region for "Only masked"; `generated` (processing size) is then
    fitted into it with "Crop and resize" and pasted there (A1111's paste_to)."""
    original = original.convert("RGB")
    alpha = mask_for_overlay(mask, only_masked=region is not None)
    if alpha.size != original.size:
        alpha = alpha.resize(original.size, resample=LANCZOS)

    # Keep the original's colours where it shows: paste premultiplied, then un-premultiply (as A1111).
    overlay = Image.new("RGBa", original.size)
    overlay.paste(original.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(alpha))
    overlay = overlay.convert("RGBA")

    if region is not None:
        x1, y1, x2, y2 = region
        base = Image.new("RGBA", original.size)
        base.paste(resize_image(1, generated.convert("RGB"), x2 - x1, y2 - y1), (x1, y1))
    else:
        if generated.size != original.size:
            raise ValueError(f"generated image is {generated.size}, the original {original.size}")
        base = generated.convert("RGBA")
    base.alpha_composite(overlay)
    return base.convert("RGB")
