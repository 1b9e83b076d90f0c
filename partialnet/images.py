"""Image folders: labelled (ImageFolder layout) and unlabelled (calibration), and loading.

A labelled folder follows torchvision's ImageFolder: one sub-folder per class, the class
index is the position of the folder name in sorted order, the images of a class are found
recursively. Every file is checked up front (header, and for PNG the chunk checksums) so a
bad file is reported, by name, before anything is written; a file that passes the check and
still fails to decode is reported, by name, when it is loaded.

Pillow is imported inside the functions: ``import partialnet`` needs only torch and numpy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partialnet.errors import ClassCountError, DataError, ImageReadError, missing_dependency

if TYPE_CHECKING:
    from PIL.Image import Image

PathLike = str | os.PathLike[str]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_CALIBRATION_IMAGES = 300
# Largest image decoded for a model input of H x W: 64x its pixels (8x per side, a routine
# downscale), and never less than Pillow's own decompression-bomb warning threshold (89.5
# MP, 268 MB as RGB), which is above every camera photo up to 80 MP. A 13000 x 13000 PNG
# (169 MP) for a 224 px model is refused; a 12 MP phone photo is not.
PIXEL_BUDGET_FACTOR = 64
PIXEL_BUDGET_FLOOR = 1024 * 1024 * 1024 // 4 // 3


@dataclass(frozen=True)
class LabelledImages:
    """The images of a labelled folder, class by class, with their class indices."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pillow is a core dependency; a broken install still says so
        raise missing_dependency("pillow", "all", "reading images") from exc
    return Image


def _folder(directory: PathLike, what: str) -> Path:
    root = Path(directory)
    if not root.exists():
        raise DataError(f"{what} folder {root} does not exist: check the path")
    if not root.is_dir():
        raise DataError(f"{what} {root} is a file, not a folder: pass the folder that holds it")
    return root


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def pixel_budget(input_size: Sequence[int]) -> int:
    """The most pixels an image may have to be decoded for a model of ``input_size``."""
    h, w = input_size
    return max(PIXEL_BUDGET_FACTOR * int(h) * int(w), PIXEL_BUDGET_FLOOR)


def _walk(root: Path, seen_dirs: set[str] | None = None) -> list[Path]:
    """Images below ``root`` in the order ImageFolder uses (directories sorted by path,
    files sorted), following a symbolic link to a directory once: every real directory is
    walked at most once (``seen_dirs``, shared across calls), so a link back up the tree
    (``0/loop -> ..``) adds nothing, and every real file is listed once."""
    seen = set() if seen_dirs is None else seen_dirs
    pending, listing = [root], []
    while pending:
        top = pending.pop()
        for dirpath, dirnames, files in os.walk(top):  # links to directories: not descended
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            listing.append((dirpath, sorted(f for f in files if _is_image(f))))
            pending += [
                os.path.join(dirpath, d)
                for d in dirnames
                if os.path.islink(os.path.join(dirpath, d))
            ]
    found, files_seen = [], set()
    for dirpath, files in sorted(listing):
        for name in files:
            path = Path(dirpath) / name
            real = os.path.realpath(path)
            if real not in files_seen:
                files_seen.add(real)
                found.append(path)
    return found


def image_files(directory: PathLike) -> list[Path]:
    """Every image below ``directory`` (recursively), in a stable sorted order."""
    root = _folder(directory, "image")
    found = _walk(root)
    if not found:
        raise DataError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} recursively): "
            "point to the folder that holds the images"
        )
    return found


def _quiet_open(Image: Any, path: object) -> Any:
    """Image.open without Pillow's decompression-bomb warning: the pixel budget decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _check_pixels(path: object, size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(
            f"image {path} is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} MP), above "
            f"the {max_pixels / 1e6:.0f} MP this model's input size allows: downscale it or "
            "remove it from the folder"
        )


def verify_images(paths: Iterable[PathLike], max_pixels: int | None = None) -> None:
    """Open every file and check it without decoding the pixels; name the first bad one.
    ``max_pixels``: refuse an image larger than that, from its header alone."""
    Image = _pil()
    for path in paths:
        try:
            with _quiet_open(Image, path) as img:
                _check_pixels(path, img.size, max_pixels)
                img.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageReadError(
                f"cannot read image {path} ({exc}): remove or replace the file"
            ) from exc


def load_rgb(image: PathLike | Image, max_pixels: int | None = None) -> Image:
    """A decoded RGB image from a path or a PIL image; ``max_pixels``: a larger file is
    refused from its header, before its pixels are decoded.

    Grayscale, palette, CMYK and RGBA become RGB by Pillow's ``convert("RGB")`` (alpha is
    dropped, not composited), exactly what torchvision's ImageFolder loader, and so the
    authors' evaluation, does. EXIF orientation is not applied, for the same reason.
    """
    Image = _pil()
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    try:
        with _quiet_open(Image, image) as img:
            _check_pixels(image, img.size, max_pixels)
            return img.convert("RGB")  # convert() decodes, so a truncated file fails here
    except FileNotFoundError as exc:
        raise ImageReadError(f"image {image} does not exist: check the path") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(
            f"cannot decode image {image} ({exc}): remove or replace the file"
        ) from exc


def labelled_folder(
    directory: PathLike, num_classes: int | None = None, *, verify: bool = True
) -> LabelledImages:
    """An ImageFolder-layout folder: paths, labels (sorted-folder-name index), class names.

    With ``num_classes`` the number of class folders must equal it: a model with 10 outputs
    evaluated on 9 folders would silently score a shifted label set.
    """
    root = _folder(directory, "labelled image")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        loose = " (it holds images directly)" if any(map(_is_image, os.listdir(root))) else ""
        raise DataError(
            f"{root} has no class sub-folders{loose}: a labelled folder needs one sub-folder "
            "of images per class, named so that sorted order gives the class index"
        )
    if num_classes is not None and len(classes) != num_classes:
        raise ClassCountError(
            f"{root} has {len(classes)} class folders but the model has {num_classes} classes: "
            "give one sub-folder per model class (sorted names = class index)"
        )
    paths: list[Path] = []
    labels: list[int] = []
    # The root and every class folder are walked as themselves only: a link into them from
    # inside a class (a loop, or another class's images) is not followed again.
    class_dirs = {os.path.realpath(root / name) for name in classes}
    seen_files: set[str] = set()
    for index, name in enumerate(classes):
        seen_dirs = {os.path.realpath(root)} | (class_dirs - {os.path.realpath(root / name)})
        found = [p for p in _walk(root / name, seen_dirs) if _key(p) not in seen_files]
        seen_files.update(_key(p) for p in found)
        if not found:
            raise DataError(
                f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                "add its images or remove the folder (it still counts as a class)"
            )
        paths.extend(found)
        labels.extend([index] * len(found))
    if verify:
        verify_images(paths)
    return LabelledImages(root, tuple(paths), tuple(labels), tuple(classes))


def _key(path: PathLike) -> str:
    return os.path.realpath(path)


def exclude_paths(paths: Sequence[PathLike], exclude: Iterable[PathLike]) -> list[Path]:
    """``paths`` without any file in ``exclude`` (compared after resolving links)."""
    drop = {_key(p) for p in exclude}
    return [Path(p) for p in paths if _key(p) not in drop]


def seeded_sample(paths: Sequence[PathLike], count: int, seed: int = 0) -> list[Path]:
    """``count`` of ``paths`` chosen by a seeded generator (all if fewer), in sorted order.

    The choice depends only on the set of paths, the count and the seed, not on the order
    the paths were given in.
    """
    if count < 1:
        raise DataError(f"the number of images must be at least 1, got {count}")
    ordered = sorted((Path(p) for p in paths), key=str)
    if len(ordered) <= count:
        return ordered
    chosen = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(chosen.tolist())]


def calibration_images(
    directory: PathLike,
    count: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    *,
    exclude: Iterable[PathLike] = (),
    verify: bool = True,
) -> list[Path]:
    """A seeded sample of ``count`` images from any folder (recursively), all if fewer.

    ``exclude`` keeps calibration apart from the images a gate checks on: pass the eval
    images so that no checked image was also used to calibrate.
    """
    root = _folder(directory, "calibration image")
    candidates = exclude_paths(image_files(root), exclude)
    if not candidates:
        raise DataError(
            f"every image in {root} is also an evaluation image: calibrate on a folder "
            "that holds other images"
        )
    chosen = seeded_sample(candidates, count, seed)
    if verify:
        verify_images(chosen)
    return chosen


def split_held_out(
    paths: Sequence[PathLike], held_out: int, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into (calibration, held out): disjoint, seeded, order-independent.

    ``held_out`` images are set aside for checking; the rest calibrate. At least one image
    must remain on each side.
    """
    if not 1 <= held_out < len(paths):
        raise DataError(
            f"cannot hold out {held_out} of {len(paths)} images: need at least one image on "
            "each side; give more images"
        )
    checked = seeded_sample(paths, held_out, seed)
    return exclude_paths(sorted((Path(p) for p in paths), key=str), checked), checked
