"""Real images that install with the test extra, written as image folders.

- scikit-learn's ``load_digits()``: 1,797 real 8x8 handwritten digits (UCI), written as
  64x64 RGB PNGs in train/ and val/ ImageFolder layout (folders ``0``..``9``), split by a
  seeded stratified draw.
- scikit-image's bundled photographs (``skimage.data``): a folder of PNG and JPEG files for
  224 px calibration and parity, grayscale ones kept grayscale so the RGB conversion runs.

Both are read from the installed wheels (nothing is downloaded); scikit-learn and
scikit-image are imported inside the functions, as they are not runtime dependencies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import missing_dependency

PathLike = str | os.PathLike[str]

DIGITS_SIZE = 64
# The 8x8 digits fill their box; they are drawn at 56 px inside a 64 px black frame (as
# MNIST frames its 20 px digits in 28 px), so a 0.875 centre crop cuts margin, not strokes.
DIGITS_DRAWN = 56
DIGITS_CLASSES = tuple(str(d) for d in range(10))
DIGITS_VAL_FRACTION = 0.2

# Photographs shipped inside the scikit-image wheel (no fetch needed), with the format each
# is written in: JPEG for the ones scikit-image ships as JPEG, PNG for the rest.
PHOTOS: dict[str, str] = {
    "astronaut": "png",
    "brick": "png",
    "camera": "png",
    "cell": "png",
    "chelsea": "png",
    "coffee": "png",
    "coins": "png",
    "grass": "png",
    "gravel": "png",
    "hubble_deep_field": "jpg",
    "immunohistochemistry": "png",
    "moon": "png",
    "page": "png",
    "retina": "jpg",
    "rocket": "jpg",
    "motorcycle_left": "png",
    "motorcycle_right": "png",
}


def _sklearn_digits() -> Any:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise missing_dependency("scikit-learn", "test", "the digits dataset") from exc
    return load_digits()


def digits_split(seed: int = 0, val_fraction: float = DIGITS_VAL_FRACTION) -> np.ndarray:
    """A boolean mask over ``load_digits()`` marking the val images: per class, seeded."""
    target = _sklearn_digits().target
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(target), dtype=bool)
    for label in range(len(DIGITS_CLASSES)):
        members = rng.permutation(np.flatnonzero(target == label))
        is_val[members[: round(len(members) * val_fraction)]] = True
    return is_val


def digit_image(pixels: np.ndarray) -> Any:
    """One 8x8 digit (values 0..16) as a 64x64 RGB PIL image: bicubic upscaling, framed."""
    from PIL import Image

    gray = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    small = Image.fromarray(gray)  # 2-D uint8: mode "L"
    drawn = small.resize((DIGITS_DRAWN, DIGITS_DRAWN), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (DIGITS_SIZE, DIGITS_SIZE), 0)
    margin = (DIGITS_SIZE - DIGITS_DRAWN) // 2
    canvas.paste(drawn, (margin, margin))
    return canvas.convert("RGB")


def write_digits_folders(
    directory: PathLike, seed: int = 0, val_fraction: float = DIGITS_VAL_FRACTION
) -> tuple[Path, Path]:
    """Write ``directory/train`` and ``directory/val`` (ImageFolder, folders 0..9).

    File names are the digit's index in ``load_digits()``, so a file can be traced back.
    Returns (train_dir, val_dir).
    """
    digits = _sklearn_digits()
    is_val = digits_split(seed, val_fraction)
    root = Path(directory)
    train_dir, val_dir = root / "train", root / "val"
    for split_dir in (train_dir, val_dir):
        for name in DIGITS_CLASSES:
            (split_dir / name).mkdir(parents=True, exist_ok=True)
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split_dir = val_dir if is_val[index] else train_dir
        digit_image(pixels).save(split_dir / str(label) / f"{index:04d}.png")
    return train_dir, val_dir


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError as exc:
        raise missing_dependency("scikit-image", "test", "the sample photographs") from exc
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.floating):  # scikit-image's float images are in [0, 1]
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photo_folder(directory: PathLike, *, quadrants: bool = False) -> Path:
    """Write scikit-image's bundled photographs into ``directory`` (created); returns it.

    Grayscale photographs stay single-channel files. With ``quadrants`` each photo's four
    quarters are written too (5x the images, each still a real photograph region), for
    checks that want more than the 17 photographs.
    """
    from PIL import Image

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for name, fmt in PHOTOS.items():
        img = Image.fromarray(_as_uint8(_photo(name)))
        parts = [("", img)]
        if quadrants:
            w, h = img.size
            boxes = {
                "tl": (0, 0, w // 2, h // 2),
                "tr": (w // 2, 0, w, h // 2),
                "bl": (0, h // 2, w // 2, h),
                "br": (w // 2, h // 2, w, h),
            }
            parts += [(f"_{k}", img.crop(box)) for k, box in boxes.items()]
        for suffix, part in parts:
            options = {"quality": 95} if fmt == "jpg" else {}
            part.save(root / f"{name}{suffix}.{fmt}", **options)
    return root


def photo_crops(count: int, size: int, seed: int = 0) -> np.ndarray:
    """``count`` seeded random square crops (30-100% of the short side) of scikit-image's
    colour photographs, bicubic-resized to ``size``: N x 3 x size x size float32 in [0, 1].

    More varied calibration/check images than the 17 whole photographs."""
    from PIL import Image

    photos = [_photo(name) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(_as_uint8(photo[y : y + side, x : x + side]))
        crop = crop.resize((size, size), Image.BICUBIC)
        out.append(np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    """Write the real-image folders the parity matrix and the examples use."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m partialnet.bench.data.datasets",
        description="Write scikit-learn's digits (train/val ImageFolder, 64x64 RGB PNGs) and "
        "scikit-image's bundled photographs as image folders.",
    )
    parser.add_argument("--digits", type=Path, help="write digits/train and digits/val here")
    parser.add_argument("--photos", type=Path, help="write the photographs here")
    parser.add_argument(
        "--quadrants", action="store_true", help="also each photo's four quarters (85 images)"
    )
    args = parser.parse_args(argv)
    if args.digits is None and args.photos is None:
        parser.error("give --digits DIR and/or --photos DIR")
    if args.digits is not None:
        train, val = write_digits_folders(args.digits)
        print(f"digits: {train} and {val}")
    if args.photos is not None:
        print(f"photos: {write_photo_folder(args.photos, quadrants=args.quadrants)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
