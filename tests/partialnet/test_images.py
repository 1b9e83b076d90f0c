"""Image folders: ImageFolder layout, seeded calibration samples, held-out splits, errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partialnet.config import ModelMeta
from partialnet.errors import ClassCountError, DataError, ImageReadError, UsageError
from partialnet.images import (
    calibration_images,
    exclude_paths,
    image_files,
    labelled_folder,
    load_rgb,
    seeded_sample,
    split_held_out,
    verify_images,
)
from partialnet.transform import preprocess


def write_image(path: Path, seed: int = 0, mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    img.save(path, format=fmt)
    return path


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert isinstance(exc.value, UsageError)  # the CLIs turn it into exit code 2
    return message


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    root = tmp_path / "labelled"
    # Classes created out of order: the index is the position in sorted names.
    write_image(root / "dog" / "b.PNG", 1)
    write_image(root / "dog" / "a.jpeg", 2, fmt="JPEG")
    write_image(root / "cat" / "nested" / "deeper" / "x.WebP", 3, fmt="WEBP")
    write_image(root / "cat" / "y.bmp", 4, mode="L")
    write_image(root / "ant" / "z.JPG", 5, fmt="JPEG")
    write_image(root / "ant" / "rgba.png", 6, mode="RGBA")
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / "scan.tiff").write_bytes(b"II*\x00")  # a format we do not list
    write_image(root / "loose.png", 7)  # outside any class folder: not a sample
    return root


def test_labelled_folder_follows_imagefolder(labelled: Path) -> None:
    data = labelled_folder(labelled, num_classes=3)
    assert data.classes == ("ant", "cat", "dog")
    rel = [p.relative_to(labelled).as_posix() for p in data.paths]
    assert rel == [
        "ant/rgba.png",
        "ant/z.JPG",
        "cat/y.bmp",
        "cat/nested/deeper/x.WebP",
        "dog/a.jpeg",
        "dog/b.PNG",
    ]
    assert data.labels == (0, 0, 1, 1, 2, 2)
    assert len(data) == 6 and data.root == labelled


def test_every_listed_format_and_mode_loads_as_rgb(labelled: Path) -> None:
    for path in labelled_folder(labelled).paths:
        img = load_rgb(path)
        assert img.mode == "RGB" and img.size == (24, 20)


def test_class_count_must_match_the_model(labelled: Path) -> None:
    with pytest.raises(ClassCountError) as exc:
        labelled_folder(labelled, num_classes=10)
    assert "3 class folders" in one_line(exc) and "10 classes" in str(exc.value)


def test_missing_folder(tmp_path: Path) -> None:
    for call in (labelled_folder, calibration_images, image_files):
        with pytest.raises(DataError) as exc:
            call(tmp_path / "nope")
        assert "does not exist" in one_line(exc)


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    path = write_image(tmp_path / "one.png")
    with pytest.raises(DataError) as exc:
        calibration_images(path)
    assert "not a folder" in one_line(exc)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as exc:
        calibration_images(tmp_path)
    assert "no images" in one_line(exc)


def test_labelled_folder_without_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    with pytest.raises(DataError) as exc:
        labelled_folder(tmp_path)
    assert "no class sub-folders" in one_line(exc) and "holds images directly" in str(exc.value)


def test_empty_class_folder(labelled: Path) -> None:
    (labelled / "bee").mkdir()
    with pytest.raises(DataError) as exc:
        labelled_folder(labelled)
    assert "bee has no images" in one_line(exc)


@pytest.mark.parametrize("content", [b"", b"definitely not a PNG", None])
def test_corrupt_image_is_named_before_use(labelled: Path, content: bytes | None) -> None:
    bad = labelled / "cat" / "broken.png"
    if content is None:  # a real PNG cut short: the header parses, the chunks do not
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
        content = buffer.getvalue()[:-30]
    bad.write_bytes(content)
    with pytest.raises(ImageReadError) as exc:
        labelled_folder(labelled)
    assert str(bad) in one_line(exc)
    with pytest.raises(ImageReadError) as exc:
        calibration_images(labelled)
    assert str(bad) in one_line(exc)


def test_truncated_jpeg_is_named_when_decoded(tmp_path: Path) -> None:
    # JPEG has no checksums: a cut file passes the cheap check and fails on decoding,
    # still naming the file.
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, format="JPEG"
    )
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    verify_images([bad])
    with pytest.raises(ImageReadError) as exc:
        preprocess(bad, _meta())
    assert str(bad) in one_line(exc)


def test_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as exc:
        load_rgb(tmp_path / "gone.png")
    assert "does not exist" in one_line(exc)


def _meta() -> ModelMeta:
    return ModelMeta(input_size=(64, 64))


@pytest.fixture
def many(tmp_path: Path) -> Path:
    root = tmp_path / "many"
    for i in range(40):
        write_image(root / f"part{i % 3}" / f"img{i:02d}.png", i)
    return root


def test_calibration_sample_is_seeded_and_recursive(many: Path) -> None:
    first = calibration_images(many, count=10, seed=0)
    assert len(first) == 10 and len(set(first)) == 10
    assert first == calibration_images(many, count=10, seed=0)
    assert first != calibration_images(many, count=10, seed=1)
    assert first == sorted(first, key=str)
    assert {p.parent.name for p in calibration_images(many, count=40)} == {
        "part0",
        "part1",
        "part2",
    }


def test_calibration_takes_all_when_fewer(many: Path) -> None:
    assert len(calibration_images(many, count=300)) == 40


def test_sample_does_not_depend_on_input_order(many: Path) -> None:
    paths = image_files(many)
    assert seeded_sample(paths, 7, seed=3) == seeded_sample(paths[::-1], 7, seed=3)
    with pytest.raises(DataError):
        seeded_sample(paths, 0)


def test_calibration_can_exclude_the_checked_images(many: Path) -> None:
    checked = calibration_images(many, count=15, seed=5)
    calib = calibration_images(many, count=300, exclude=checked)
    assert len(calib) == 25 and not set(calib) & set(checked)
    with pytest.raises(DataError) as exc:
        calibration_images(many, exclude=image_files(many))
    assert "also an evaluation image" in one_line(exc)


def test_exclude_compares_resolved_paths(many: Path) -> None:
    paths = image_files(many)
    # The same file spelled through a "..": still excluded.
    other = [many / "part0" / ".." / "part0" / paths[0].name]
    assert exclude_paths(paths, other) == paths[1:]


def test_held_out_split_is_disjoint_and_seeded(many: Path) -> None:
    paths = image_files(many)
    calib, held = split_held_out(paths, 8, seed=2)
    assert len(held) == 8 and len(calib) == 32
    assert not set(calib) & set(held) and set(calib) | set(held) == set(paths)
    assert (calib, held) == split_held_out(paths[::-1], 8, seed=2)
    assert held != split_held_out(paths, 8, seed=3)[1]
    for bad in (0, 40):
        with pytest.raises(DataError) as exc:
            split_held_out(paths, bad)
        assert "each side" in one_line(exc)


def test_import_partialnet_loads_no_image_or_dataset_library() -> None:
    # Pillow is imported when an image is first read; scikit-learn/-image only by bench.
    code = (
        "import sys, partialnet\n"
        "print(sorted({'PIL', 'sklearn', 'skimage'} & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_symlink_loop_is_not_walked_into(labelled: Path) -> None:
    # The case: a link from a class folder back to the root. Walked into, it made
    # 540 images 22,140 with the wrong labels; followed once, it adds nothing.
    before = labelled_folder(labelled, num_classes=3)
    (labelled / "ant" / "loop").symlink_to("..")
    (labelled / "cat" / "nested" / "up").symlink_to("../..")
    after = labelled_folder(labelled, num_classes=3)
    assert after.paths == before.paths and after.labels == before.labels
    assert len(image_files(labelled)) == 7  # the six class images and loose.png, once each


def test_a_linked_directory_is_followed_once_and_each_real_image_keeps_its_class(
    labelled: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage" / "emus"
    write_image(storage / "e1.png", 8)
    write_image(storage / "e2.png", 9)
    (labelled / "emu").symlink_to(storage)  # a class folder that lives elsewhere: followed
    (labelled / "emu" / "again").symlink_to(storage)  # ... once
    (labelled / "ant" / "dogs").symlink_to(labelled / "dog")  # dog's images stay dog's
    (labelled / "ant" / "same.png").symlink_to(labelled / "ant" / "z.JPG")  # one real image
    data = labelled_folder(labelled, num_classes=4)
    by_class = {  # by the real file: a link to an image is the same image
        c: sorted(p.resolve().name for p, i in zip(data.paths, data.labels, strict=True) if i == n)
        for n, c in enumerate(data.classes)
    }
    assert by_class == {
        "ant": ["rgba.png", "z.JPG"],
        "cat": ["x.WebP", "y.bmp"],
        "dog": ["a.jpeg", "b.PNG"],
        "emu": ["e1.png", "e2.png"],
    }


def test_images_above_the_pixel_budget_are_refused_from_the_header(tmp_path: Path) -> None:
    from partialnet.images import PIXEL_BUDGET_FLOOR, pixel_budget

    assert pixel_budget((64, 64)) == PIXEL_BUDGET_FLOOR  # the floor: any camera photo fits
    assert pixel_budget((2048, 2048)) == 64 * 2048 * 2048  # tied to the input size above it
    # A 1-bit PNG of 9500 x 9500 (90 MP, ~11 KB on disk): decoding it as RGB would take
    # 270 MB. The header alone refuses it.
    big = tmp_path / "bomb.png"
    Image.new("1", (9500, 9500)).save(big, optimize=True)
    assert big.stat().st_size < 1 << 20
    with pytest.raises(ImageReadError) as exc:
        preprocess(big, _meta())
    assert "9500x9500" in one_line(exc) and "bomb.png" in one_line(exc)
    with pytest.raises(ImageReadError):
        verify_images([big], max_pixels=pixel_budget((64, 64)))
    ok = tmp_path / "photo.png"
    Image.new("RGB", (4000, 3000)).save(ok)  # a 12 MP photo is fine for a 64 px model
    assert preprocess(ok, _meta()).shape == (3, 64, 64)
