"""preprocess() against the authors' eval transform, computed here from its definition.

The reference below restates torchvision's Resize(int) / Resize((h, w)) / CenterCrop /
ToTensor / Normalize on a PIL image (torchvision itself does not import beside our torch):
PIL computes the resize, PIL's crop() cuts the box, torch does the arithmetic. Only the
short/long side formula is shared in spirit with the code under test, because it is the
definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import partialnet
from partialnet.config import ModelMeta
from partialnet.errors import ConfigError, InputShapeError
from partialnet.transform import (
    model_meta,
    preprocess,
    preprocess_batch,
    preprocessing_record,
    resized_size,
)

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# pl_bolts' cifar10_normalization(), which the authors import: 8-bit statistics over 255.
CIFAR = ([125.3 / 255, 123.0 / 255, 113.9 / 255], [63.0 / 255, 62.1 / 255, 66.7 / 255])
# Both sides compute (uint8 / 255 - mean) / std in float32 from identical uint8 pixels, so
# they agree to rounding of a few float32 operations on values of magnitude <= 3 (~1e-6);
# 1e-5 is the bound the transform is specified to.
ATOL = 1e-5


def reference(img: Image.Image, size: int, crop: float) -> np.ndarray:
    """The authors' build_transform(is_train=False, image_size=size, test_crop_ratio=crop)."""
    img = img.convert("RGB")  # torchvision's ImageFolder loader
    if size >= 384:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    elif size > 32:
        target = int(1.0 * size / crop)
        w, h = img.size
        short, long = min(w, h), max(w, h)
        other = int(target * long / short)
        new_w, new_h = (target, other) if w <= h else (other, target)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left = round((new_w - size) / 2.0)
        top = round((new_h - size) / 2.0)
        img = img.crop((left, top, left + size, top + size))
    mean, std = CIFAR if size == 32 else IMAGENET
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32).div(255)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((t - mean_t) / std_t).numpy()


def meta(size: int, crop: float = 0.875) -> ModelMeta:
    return ModelMeta(input_size=(size, size), crop_pct=crop)


@pytest.fixture(scope="module")
def photos(photo_folder: Path) -> dict[str, Image.Image]:
    names = ["astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg"]
    out = {}
    for name in names:
        with Image.open(photo_folder / name) as img:
            out[name] = img.copy()
    return out


@pytest.fixture(scope="module")
def digit(digits_folders: tuple[Path, Path]) -> Image.Image:
    with Image.open(next((digits_folders[1] / "7").iterdir())) as img:
        return img.copy()


@pytest.mark.parametrize(("size", "crop"), [(64, 0.875), (224, 0.9), (256, 0.875), (384, 1.0)])
@pytest.mark.parametrize(
    "name", ["astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg"]
)
def test_matches_the_authors_transform_on_photos(
    photos: dict[str, Image.Image], name: str, size: int, crop: float
) -> None:
    img = photos[name]
    got = preprocess(img, meta(size, crop))
    assert got.dtype == np.float32 and got.shape == (3, size, size)
    np.testing.assert_allclose(got, reference(img, size, crop), rtol=0, atol=ATOL)


@pytest.mark.parametrize(("size", "crop"), [(64, 0.875), (64, 1.0), (224, 0.875), (384, 0.9)])
def test_matches_the_authors_transform_on_a_digit(
    digit: Image.Image, size: int, crop: float
) -> None:
    np.testing.assert_allclose(
        preprocess(digit, meta(size, crop)), reference(digit, size, crop), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "camera.png"])
def test_32_px_is_not_resized_and_uses_cifar_statistics(
    photos: dict[str, Image.Image], name: str
) -> None:
    # 32x32 real patches (CIFAR-10 sized), taken from the middle of each photo.
    w, h = photos[name].size
    patch = photos[name].crop((w // 2, h // 2, w // 2 + 32, h // 2 + 32))
    got = preprocess(patch, meta(32))
    np.testing.assert_allclose(got, reference(patch, 32, 0.875), rtol=0, atol=ATOL)
    # The same pixels under ImageNet statistics differ by far more than the tolerance.
    assert np.abs(got - reference(patch, 224, 1.0)[:, :32, :32]).max() > 0.01


def test_32_px_refuses_other_image_sizes(photos: dict[str, Image.Image]) -> None:
    with pytest.raises(InputShapeError, match="32x32"):
        preprocess(photos["coffee.png"], meta(32))


def test_resize_sizes_worked_by_hand() -> None:
    # coffee is 600x400: at 224/0.875 the shorter side goes to int(256.0) = 256, the longer
    # to int(256 * 600 / 400) = 384.
    assert resized_size(600, 400, meta(224, 0.875)) == (384, 256)
    # chelsea is 451x300: at 224/0.9 the target is int(248.88) = 248, the longer side
    # int(248 * 451 / 300) = int(372.83) = 372.
    assert resized_size(451, 300, meta(224, 0.9)) == (372, 248)
    # Portrait: the width is the shorter side.
    assert resized_size(300, 451, meta(224, 0.9)) == (248, 372)
    # A 64x64 digit at 64/0.875 -> int(73.14) = 73 on both sides.
    assert resized_size(64, 64, meta(64, 0.875)) == (73, 73)
    # 384 and above: a warp to the size, whatever the aspect.
    assert resized_size(600, 400, meta(384)) == (384, 384)


@pytest.mark.parametrize(("crop", "side", "offset"), [(0.875, 73, 4), (0.9, 71, 4)])
def test_center_crop_offset_rounds_half_to_even(crop: float, side: int, offset: int) -> None:
    # An image already at the resize target is not resampled, so the crop is visible
    # exactly: red encodes the column, green the row. 73 - 64 = 9 -> round(4.5) = 4 (down);
    # 71 - 64 = 7 -> round(3.5) = 4 (up): Python's round, as torchvision's center_crop.
    yy, xx = np.mgrid[0:side, 0:side]
    pixels = np.stack([xx * 3, yy * 3, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    out = preprocess(Image.fromarray(pixels), meta(64, crop))
    red = out[0] * IMAGENET[1][0] + IMAGENET[0][0]
    green = out[1] * IMAGENET[1][1] + IMAGENET[0][1]
    # (value / 255) back to the 8-bit code: the rounding error is < 1e-4 of a code.
    assert round(float(red[0, 0]) * 255 / 3) == offset
    assert round(float(green[0, 0]) * 255 / 3) == offset


def test_crop_larger_than_image_pads_with_black_like_torchvision() -> None:
    # crop_pct 1.25 at 64: resize to int(51.2) = 51, then CenterCrop(64) pads (64-51)=13
    # as 6 left/top and 7 right/bottom with zeros before cutting.
    img = Image.new("RGB", (51, 51), (255, 255, 255))
    out = preprocess(img, meta(64, 1.25))
    white = (1 - np.array(IMAGENET[0])) / np.array(IMAGENET[1])
    black = -np.array(IMAGENET[0]) / np.array(IMAGENET[1])
    np.testing.assert_allclose(out[:, 6, 6], white, atol=ATOL)
    np.testing.assert_allclose(out[:, 5, 5], black, atol=ATOL)
    np.testing.assert_allclose(out[:, 56, 56], white, atol=ATOL)
    np.testing.assert_allclose(out[:, 57, 57], black, atol=ATOL)


def test_non_square_size_covers_then_crops(photos: dict[str, Image.Image]) -> None:
    # (224, 288) at 0.875 must cover int(256.0) x int(329.14) = 256 x 329. coffee (600x400)
    # scaled so its height is 256 is 384 wide (covers 329); the centre 288x224 is cut at
    # left (384 - 288) / 2 = 48, top (256 - 224) / 2 = 16.
    img = photos["coffee.png"]
    m = ModelMeta(input_size=(224, 288), crop_pct=0.875)
    assert resized_size(600, 400, m) == (384, 256)
    resized = img.resize((384, 256), Image.Resampling.BICUBIC).crop((48, 16, 48 + 288, 16 + 224))
    expected = reference(resized, 224, 1.0)  # no further resize: only scaling + normalization
    got = preprocess(img, m)
    assert got.shape == (3, 224, 288)
    # reference() at crop 1.0 cuts a 224x224 square; compare that part, then the shape.
    np.testing.assert_allclose(got[:, :, 32:256], expected, rtol=0, atol=ATOL)


def test_non_square_size_at_384_warps(photos: dict[str, Image.Image]) -> None:
    m = ModelMeta(input_size=(384, 448))
    img = photos["chelsea.png"]
    warped = img.resize((448, 384), Image.Resampling.BICUBIC)
    got = preprocess(img, m)
    mean = np.array(IMAGENET[0], np.float32)[:, None, None]
    std = np.array(IMAGENET[1], np.float32)[:, None, None]
    expected = (np.asarray(warped, np.float32).transpose(2, 0, 1) / np.float32(255) - mean) / std
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_grayscale_is_replicated_to_rgb(photos: dict[str, Image.Image]) -> None:
    gray = photos["camera.png"]
    assert gray.mode == "L"
    out = preprocess(gray, meta(224))
    unnormalized = out * np.array(IMAGENET[1])[:, None, None] + np.array(IMAGENET[0])[:, None, None]
    # The three channels are one gray plane: equal up to the normalization's float32 rounding.
    np.testing.assert_allclose(unnormalized[0], unnormalized[1], atol=ATOL)
    np.testing.assert_allclose(unnormalized[0], unnormalized[2], atol=ATOL)


def test_alpha_is_dropped_not_composited(photos: dict[str, Image.Image]) -> None:
    rgb = photos["astronaut.png"]
    alpha = Image.linear_gradient("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    np.testing.assert_array_equal(preprocess(rgba, meta(224)), preprocess(rgb, meta(224)))


def test_palette_image_is_converted(photos: dict[str, Image.Image]) -> None:
    pal = photos["coffee.png"].convert("P")
    np.testing.assert_allclose(
        preprocess(pal, meta(224)), reference(pal.convert("RGB"), 224, 0.875), atol=ATOL
    )


def test_path_and_pil_inputs_agree(photo_folder: Path) -> None:
    path = photo_folder / "rocket.jpg"
    with Image.open(path) as img:
        from_pil = preprocess(img.copy(), meta(224))
    np.testing.assert_array_equal(preprocess(path, meta(224)), from_pil)
    np.testing.assert_array_equal(preprocess(str(path), meta(224)), from_pil)


def test_metadata_comes_from_a_model_config_or_meta() -> None:
    model = partialnet.create_model("t0", num_classes=10)
    assert model_meta(model) is model.cfg.meta
    assert model_meta(model.cfg) is model.cfg.meta
    inference = partialnet.reparameterize(model.eval())
    assert model_meta(inference) == model.cfg.meta
    with pytest.raises(ConfigError, match="ModelMeta"):
        model_meta(torch.nn.Linear(2, 2))


def test_batch_stacks_images(photos: dict[str, Image.Image], photo_folder: Path) -> None:
    images = [photos["astronaut.png"], photo_folder / "coffee.png", photos["camera.png"]]
    batch = preprocess_batch(images, meta(64))
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[2], preprocess(photos["camera.png"], meta(64)))
    assert preprocess_batch([], meta(64)).shape == (0, 3, 64, 64)


def test_record_describes_each_rule() -> None:
    mid = preprocessing_record(meta(224, 0.9))
    assert mid["resize"]["rule"] == "shorter_side" and mid["resize"]["size"] == [248, 248]
    assert mid["center_crop"]["size"] == [224, 224] and mid["crop_pct"] == 0.9
    assert mid["mean"] == IMAGENET[0] and mid["std"] == IMAGENET[1]
    assert preprocessing_record(meta(384))["resize"]["rule"] == "warp"
    assert "center_crop" not in preprocessing_record(meta(384))
    small = preprocessing_record(meta(32))
    assert small["resize"] == {"rule": "none"} and small["mean"] == CIFAR[0]
    wide = preprocessing_record(ModelMeta(input_size=(224, 288), crop_pct=0.875))
    assert wide["resize"]["rule"] == "cover" and wide["resize"]["size"] == [256, 329]
    for record in (mid, small, wide):
        assert json.loads(json.dumps(record)) == record
