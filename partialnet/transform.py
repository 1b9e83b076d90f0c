"""The authors' evaluation transform, in Pillow and numpy, driven by the model's metadata.

PartialNet's ``build_transform(is_train=False)`` (data/custom_imagenet_data.py) is, for a
square ``size`` and crop ratio ``crop``:

- ``32 < size < 384``: torchvision ``Resize(int(size / crop), BICUBIC)`` (the shorter side
  to that length, the longer side ``int(length * long / short)``; on a PIL image this is
  Pillow's antialiased bicubic resize), ``CenterCrop(size)`` (offsets
  ``int(round((side - size) / 2))``, zero padding where the image is smaller),
  ``ToTensor()`` (/255), ImageNet normalization.
- ``size >= 384``: bicubic resize to ``size x size`` (a warp: no aspect kept, no crop).
- ``size == 32``: no resize at all (CIFAR-10 images are 32x32), pl_bolts' CIFAR-10
  normalization.

Non-square sizes (the authors train only square ones) generalize the middle rule: the image
is scaled, aspect kept, until it covers ``int(h / crop) x int(w / crop)``, then the centre
``h x w`` is cut; for a square size this is exactly the rule above. The warp applies when
the shorter side of the size is >= 384.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from partialnet.config import ModelMeta, PartialNetConfig
from partialnet.errors import ConfigError, InputShapeError
from partialnet.images import load_rgb, pixel_budget

if TYPE_CHECKING:
    from PIL.Image import Image
    from torch import nn

PathLike = str | os.PathLike[str]

# The authors normalize 32 px inputs with pl_bolts' cifar10_normalization(), whose values
# are these 8-bit figures / 255 (not the often quoted 0.4914, 0.4822, 0.4465 / 0.2470,
# 0.2435, 0.2616, which differ by up to 1.5e-4 in the mean, 6e-4 after normalization).
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
WARP_FROM = 384  # the authors evaluate at 384 px and above without cropping
NO_RESIZE_AT = 32  # the authors' CIFAR-10 setting


def model_meta(model_or_meta: nn.Module | PartialNetConfig | ModelMeta) -> ModelMeta:
    """The ModelMeta of a model (eager or inference form), a config, or a ModelMeta."""
    if isinstance(model_or_meta, ModelMeta):
        return model_or_meta
    if isinstance(model_or_meta, PartialNetConfig):
        return model_or_meta.meta
    cfg = getattr(model_or_meta, "cfg", None)
    if isinstance(cfg, PartialNetConfig):
        return cfg.meta
    raise ConfigError(
        f"cannot tell the input size of a {type(model_or_meta).__name__}: pass a PartialNet "
        "model, its PartialNetConfig or a ModelMeta"
    )


def _mode(meta: ModelMeta) -> str:
    h, w = meta.input_size
    if (h, w) == (NO_RESIZE_AT, NO_RESIZE_AT):
        return "none"
    if min(h, w) >= WARP_FROM:
        return "warp"
    if meta.crop_pct <= 0:
        raise ConfigError(f"crop_pct must be positive, got {meta.crop_pct}")
    return "resize_crop"


def normalization(meta: ModelMeta) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) applied after scaling to [0, 1]: CIFAR-10's at 32 px, else the model's."""
    if _mode(meta) == "none":
        return CIFAR10_MEAN, CIFAR10_STD
    return tuple(meta.mean), tuple(meta.std)


def resize_target(meta: ModelMeta) -> tuple[int, int]:
    """The (h, w) the resized image must cover before the centre crop: int(side / crop)."""
    h, w = meta.input_size
    return int(h / meta.crop_pct), int(w / meta.crop_pct)


def resized_size(width: int, height: int, meta: ModelMeta) -> tuple[int, int]:
    """(width, height) after the resize step, as torchvision computes it for Resize(int)."""
    mode = _mode(meta)
    if mode == "none":
        return width, height
    if mode == "warp":
        return meta.input_size[1], meta.input_size[0]
    th, tw = resize_target(meta)
    # The side whose scale factor is larger decides; compared exactly in integers. For a
    # square target it is the shorter image side, and the other side is
    # int(target * long / short), torchvision's formula.
    if th * width >= tw * height:
        return int(th * width / height), th
    return tw, int(tw * height / width)


def _center_crop(pixels: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if crop_h > h or crop_w > w:  # torchvision pads with zeros first (only when crop_pct > 1)
        top, left = max(crop_h - h, 0), max(crop_w - w, 0)
        pad = ((top // 2, (top + 1) // 2), (left // 2, (left + 1) // 2), (0, 0))
        pixels = np.pad(pixels, pad)
        h, w = pixels.shape[:2]
    # Python's round: half to even, as torchvision's center_crop.
    top, left = round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)
    return pixels[top : top + crop_h, left : left + crop_w]


def preprocess(image: PathLike | Image, model_or_meta: Any) -> np.ndarray:
    """One image as the model takes it: float32, C x H x W, normalized.

    ``image`` is a path or a PIL image; ``model_or_meta`` a PartialNet (eager or inference
    form), its PartialNetConfig, or a ModelMeta, whose input size and crop ratio (a
    checkpoint's ``image_size`` and ``test_crop_ratio``) choose the transform.
    """
    from PIL import Image

    meta = model_meta(model_or_meta)
    img = load_rgb(image, max_pixels=pixel_budget(meta.input_size))
    mode = _mode(meta)
    if mode == "none" and img.size != (meta.input_size[1], meta.input_size[0]):
        raise InputShapeError(
            f"{image if not isinstance(image, Image.Image) else 'the image'} is "
            f"{img.size[0]}x{img.size[1]}, but at 32 px the authors' transform does not "
            "resize: give 32x32 images (CIFAR-10 style)"
        )
    size = resized_size(*img.size, meta)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(img, dtype=np.uint8)
    if mode == "resize_crop":
        pixels = _center_crop(pixels, *meta.input_size)
    mean, std = normalization(meta)
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    out = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess_batch(images: Sequence[PathLike | Image], model_or_meta: Any) -> np.ndarray:
    """N x C x H x W float32 from a list of paths or PIL images (see ``preprocess``)."""
    meta = model_meta(model_or_meta)
    if not images:
        h, w = meta.input_size
        return np.zeros((0, 3, h, w), np.float32)
    return np.stack([preprocess(im, meta) for im in images])


def preprocessing_record(model_or_meta: Any) -> dict[str, Any]:
    """A JSON-ready description of ``preprocess`` for this model, for metadata/manifests."""
    meta = model_meta(model_or_meta)
    mode = _mode(meta)
    mean, std = normalization(meta)
    h, w = meta.input_size
    record: dict[str, Any] = {
        "transform": "PartialNet build_transform(is_train=False)",
        "input_size": [h, w],
        "color": "RGB (Pillow convert('RGB'): grayscale replicated, alpha dropped)",
        "layout": "NCHW",
        "dtype": "float32",
    }
    if mode == "none":
        record["resize"] = {"rule": "none"}
    elif mode == "warp":
        record["resize"] = {"rule": "warp", "size": [h, w], "interpolation": "bicubic"}
    else:
        th, tw = resize_target(meta)
        rule = "shorter_side" if h == w else "cover"
        record["resize"] = {"rule": rule, "size": [th, tw], "interpolation": "bicubic"}
        record["crop_pct"] = meta.crop_pct
        record["center_crop"] = {"size": [h, w], "offset": "round((side - crop) / 2)"}
    if mode != "none":
        record["resize"]["library"] = "Pillow (antialiased), int() of the scaled longer side"
    record["scale"] = "1/255"
    record["mean"] = list(mean)
    record["std"] = list(std)
    return record
