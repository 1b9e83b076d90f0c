"""The real-image folders written from scikit-learn's digits and scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partialnet.bench.data.datasets import DIGITS_CLASSES, PHOTOS, digits_split, write_photo_folder
from partialnet.images import calibration_images, labelled_folder


def test_digits_folders_hold_every_digit_once(digits_folders: tuple[Path, Path]) -> None:
    sklearn = pytest.importorskip("sklearn.datasets")
    target = sklearn.load_digits().target
    train = labelled_folder(digits_folders[0], num_classes=10)
    val = labelled_folder(digits_folders[1], num_classes=10)
    assert train.classes == val.classes == DIGITS_CLASSES
    assert len(train) + len(val) == len(target) == 1797
    # File names are indices into load_digits(): each appears once, with its own label.
    indices = [int(p.stem) for p in (*train.paths, *val.paths)]
    assert sorted(indices) == list(range(len(target)))
    labels = np.array([*train.labels, *val.labels])
    np.testing.assert_array_equal(labels, target[indices])


def test_digits_split_is_stratified_and_seeded(digits_folders: tuple[Path, Path]) -> None:
    sklearn = pytest.importorskip("sklearn.datasets")
    target = sklearn.load_digits().target
    val = labelled_folder(digits_folders[1])
    counts = np.bincount(val.labels, minlength=10)
    # 20% of each class, rounded: class sizes are 174..183, so 35 or 36 (37 for 183).
    expected = [round(n * 0.2) for n in np.bincount(target)]
    np.testing.assert_array_equal(counts, expected)
    mask = digits_split(seed=0)
    assert sorted(int(p.stem) for p in val.paths) == np.flatnonzero(mask).tolist()
    np.testing.assert_array_equal(mask, digits_split(seed=0))
    assert (mask != digits_split(seed=1)).any()


def test_digit_images_are_64px_rgb(digits_folders: tuple[Path, Path]) -> None:
    path = next((digits_folders[0] / "3").iterdir())
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
        pixels = np.asarray(img)
    assert (pixels[..., 0] == pixels[..., 1]).all() and pixels.max() > 200  # gray ink on black
    # Drawn at 56 px in a 4 px black frame, which the 0.875 eval crop removes.
    assert pixels[:4].max() == pixels[-4:].max() == pixels[:, :4].max() == 0


def test_photo_folder_holds_the_bundled_photographs(photo_folder: Path) -> None:
    files = sorted(p.name for p in photo_folder.iterdir())
    assert files == sorted(f"{name}.{fmt}" for name, fmt in PHOTOS.items())
    modes = set()
    for path in calibration_images(photo_folder):  # verified, all of them (fewer than 300)
        with Image.open(path) as img:
            modes.add(img.mode)
            assert min(img.size) >= 191  # page.png, the smallest, is 384x191
    assert modes == {"RGB", "L"}


def test_photo_quadrants(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    folder = write_photo_folder(tmp_path, quadrants=True)
    assert len(list(folder.iterdir())) == 5 * len(PHOTOS)
    with Image.open(folder / "coffee.png") as whole, Image.open(folder / "coffee_br.png") as br:
        np.testing.assert_array_equal(np.asarray(br), np.asarray(whole)[200:, 300:])
