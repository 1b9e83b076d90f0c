"""Folders to preprocessed arrays, as --eval-data and --calibration-data load them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partialnet.config import ModelMeta
from partialnet.data import calibration_data, eval_data
from partialnet.errors import ClassCountError, ImageReadError
from partialnet.transform import preprocess

DIGITS = ModelMeta(input_size=(64, 64), crop_pct=0.875, num_classes=10)


def test_eval_data_preprocesses_a_labelled_folder(digits_folders: tuple[Path, Path]) -> None:
    val = eval_data(digits_folders[1], DIGITS)
    assert val.inputs.shape == (len(val), 3, 64, 64) and val.inputs.dtype == np.float32
    assert val.labels is not None and val.labels.dtype == np.int64
    assert val.classes == tuple("0123456789")
    i = 100
    assert int(val.labels[i]) == int(val.paths[i].parent.name)
    np.testing.assert_array_equal(val.inputs[i], preprocess(val.paths[i], DIGITS))
    info = val.describe()
    assert info == {"dataset": str(digits_folders[1]), "images": len(val), "classes": 10}
    assert json.loads(json.dumps(info)) == info


def test_eval_data_checks_the_class_count(digits_folders: tuple[Path, Path]) -> None:
    with pytest.raises(ClassCountError):
        eval_data(digits_folders[1], ModelMeta(input_size=(64, 64), num_classes=1000))


def test_calibration_data_samples_and_excludes(photo_folder: Path) -> None:
    meta = ModelMeta(input_size=(64, 64))
    checked = calibration_data(photo_folder, meta, count=5, seed=1)
    rest = calibration_data(photo_folder, meta, count=300, exclude=checked.paths)
    assert len(checked) == 5 and checked.labels is None and checked.classes is None
    assert not set(checked.paths) & set(rest.paths)
    assert len(checked) + len(rest) == len(list(photo_folder.iterdir()))
    assert rest.inputs.shape == (len(rest), 3, 64, 64)
    assert checked.describe() == {"dataset": str(photo_folder), "images": 5}


def test_a_bad_file_stops_loading_by_name(tmp_path: Path, photo_folder: Path) -> None:
    (tmp_path / "good.png").write_bytes((photo_folder / "coffee.png").read_bytes())
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        calibration_data(tmp_path, ModelMeta())
