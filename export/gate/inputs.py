"""What the parity gate and the int8 quantizers run on, chosen from what the user gave.

The gate uses the eval images when given (with labels: accuracy too), else calibration
images, else seeded noise. int8 calibrates on a seeded sample of ``--calibration-data``
that never contains an image the gate checks: the eval images are excluded from it, and
without eval images a quarter of the sample (at most 64 images) is held out for the gate.
Everything is read and preprocessed before the export writes anything, so a bad folder or
file stops it with one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.config import ModelMeta
from partialnet.errors import UsageError
from partialnet.export.gate.parity import PARITY_IMAGES, GateImages, noise_images
from partialnet.export.options import DEFAULT_CALIBRATION_IMAGES, PRECISIONS, Precision

EVAL_IMAGES = "eval images"
CALIBRATION_IMAGES = "calibration images"
HELD_OUT_IMAGES = "calibration images held out from int8 calibration"
MAX_HELD_OUT = 64


@dataclass(frozen=True)
class ExportInputs:
    """The gate's images, the int8 calibration batch (None unless int8), and a record of
    both for the manifest."""

    gate: GateImages
    calibration: np.ndarray | None
    record: dict[str, Any]


def input_meta(meta: ModelMeta, size: tuple[int, int]) -> ModelMeta:
    """The model's preprocessing at the export's input size (the crop ratio is kept)."""
    return dataclasses.replace(meta, input_size=tuple(size))


def load_inputs(
    meta: ModelMeta,
    chw: tuple[int, int, int],
    precision: Precision,
    batch: int,
    *,
    eval_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    noise_count: int = PARITY_IMAGES,
) -> ExportInputs:
    """Read, check and preprocess the folders; raises a DataError (a UsageError) naming the
    folder or file that cannot be used."""
    from partialnet.data import calibration_data as load_calibration
    from partialnet.data import eval_data as load_eval
    from partialnet.images import calibration_images as calibration_images_in
    from partialnet.images import split_held_out
    from partialnet.transform import preprocess_batch, preprocessing_record

    if PRECISIONS[precision].needs_calibration and calibration_data is None:
        raise UsageError(
            f"{precision.value} needs calibration images: add --calibration-data DIR (a "
            "folder of images like the ones the model will see; "
            f"{DEFAULT_CALIBRATION_IMAGES} are sampled by default)"
        )
    if calibration_images < 1:
        raise UsageError(f"--calibration-images must be >= 1, got {calibration_images}")
    if chw[0] != 3 and (eval_data is not None or calibration_data is not None):
        raise UsageError(f"image folders need a 3-channel (RGB) model; this one takes {chw[0]}")
    meta = input_meta(meta, chw[1:])
    record: dict[str, Any] = {"preprocessing": preprocessing_record(meta)}
    evaluation = load_eval(eval_data, meta) if eval_data is not None else None
    calibration = None
    gate: GateImages
    if evaluation is not None:
        gate = GateImages(evaluation.inputs, evaluation.labels, EVAL_IMAGES, str(eval_data))
        record["eval"] = evaluation.describe()
    if calibration_data is not None and evaluation is not None and precision is not Precision.INT8:
        # Neither calibrated on nor checked on: the folder is only verified, not preprocessed.
        unused = calibration_images_in(
            calibration_data, calibration_images, exclude=evaluation.paths
        )
        record["calibration"] = {
            "dataset": str(calibration_data),
            "images": len(unused),
            "used_to_calibrate": 0,
        }
    elif calibration_data is not None:
        exclude = evaluation.paths if evaluation is not None else ()
        sample = load_calibration(calibration_data, meta, calibration_images, exclude=exclude)
        paths, inputs = list(sample.paths), sample.inputs
        if evaluation is None and precision is Precision.INT8:
            held = max(1, min(MAX_HELD_OUT, len(paths) // 4))
            calibrate, checked = split_held_out(paths, held)
            index = {p: i for i, p in enumerate(paths)}
            inputs = inputs[[index[p] for p in calibrate]]
            gate_inputs = preprocess_batch(checked, meta)
            gate = GateImages(gate_inputs, None, HELD_OUT_IMAGES, str(calibration_data))
            paths = calibrate
        elif evaluation is None:
            gate = GateImages(inputs, None, CALIBRATION_IMAGES, str(calibration_data))
        if precision is Precision.INT8:
            calibration = inputs
        record["calibration"] = {**sample.describe(), "used_to_calibrate": len(paths)}
    if evaluation is None and calibration_data is None:
        gate = noise_images(chw, batch, noise_count)
    record["gate"] = {"inputs": gate.source, "images": len(gate.images)}
    return ExportInputs(gate, calibration, record)
