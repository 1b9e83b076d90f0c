"""The reference every export carries: what the gate ran on, what the eager model answered,
and the rule the artifact was judged by, so that a device can repeat the gate without torch.

One ``.npz`` (numpy only, no pickle: it loads with ``np.load(allow_pickle=False)``) holds

- the gate's inputs in the smallest form that gives back the exact float32 tensors: for
  seeded noise the numpy recipe (seed, batch, count, shape); for image folders the cropped
  uint8 pixels before normalization plus the mean/std (t1 at 224 px, 64 images: 9.6 MB
  raw, less compressed); float32 only when neither reproduces the gate's tensors bit for bit.
  Every encoding is decoded and compared with the gate's tensors before it is written, and
  the sha256 of the float32 bytes is kept so the device proves its decoding too;
- ``output/<name>``: the eager fp32 outputs on those inputs (``logits``, or a backbone's
  ``feat0..feat3``), computed in the gate's batches;
- ``labels`` with ``--eval-data``;
- ``meta``: a JSON string (encoding, where the images came from, precision, the rule and
  its thresholds, the batch the gate fed).

The file is named after its content (``reference-<digest>.npz``): exports into the same
directory with other gate inputs keep their own reference beside the earlier one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import PartialNetError
from partialnet.export.gate.parity import NOISE, PARITY_SEED, GateImages, noise_images

FORMAT = 1
OUTPUT_PREFIX = "output/"


class ReferenceError(PartialNetError):
    """A reference file that cannot be read or does not hold what it says (exit code 1)."""


@dataclass(frozen=True)
class Reference:
    """A reference decoded: the gate's inputs, the eager outputs, labels, and the record."""

    gate: GateImages
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def features(self) -> bool:
        return bool(self.meta.get("features"))

    @property
    def batch(self) -> int:
        return int(self.meta["batch"])

    def expected(self) -> np.ndarray | dict[str, np.ndarray]:
        """What a runner's ``infer`` (classifier) or ``infer_all`` (backbone) is judged against."""
        return dict(self.outputs) if self.features else self.outputs["logits"]


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()


def normalize_uint8(pixels: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """N x H x W x C uint8 -> N x C x H x W float32, in the same float32 operations as
    ``partialnet.transform.preprocess`` (so the result is bit-identical to it)."""
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    out = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _as_uint8(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray | None:
    """The uint8 pixels the images were normalized from, if they round-trip exactly."""
    if images.ndim != 4 or images.shape[1] != len(mean):
        return None
    hwc = images.transpose(0, 2, 3, 1).astype(np.float64)
    pixels = np.rint((hwc * np.asarray(std) + np.asarray(mean)) * 255.0)
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        return None
    pixels = pixels.astype(np.uint8)
    if not np.array_equal(normalize_uint8(pixels, mean, std), images):
        return None
    return pixels


def encode_inputs(
    gate: GateImages, batch: int, preprocessing: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The smallest arrays + record that give the gate's float32 inputs back exactly."""
    images = gate.images
    record: dict[str, Any] = {"images": len(images), "shape": list(images.shape[1:])}
    if gate.source == NOISE:
        recipe = {"seed": PARITY_SEED, "batch": batch, "count": len(images)}
        if np.array_equal(_noise(record["shape"], recipe), images):
            recipe["generator"] = (
                "np.random.default_rng(seed).standard_normal((batch, *shape), float32), "
                "batch after batch, concatenated, first count"
            )
            return {}, {**record, "encoding": "seeded_noise", **recipe}
    mean, std = preprocessing.get("mean"), preprocessing.get("std")
    if mean is not None and std is not None:
        pixels = _as_uint8(images, list(mean), list(std))
        if pixels is not None:
            extra = {"mean": list(mean), "std": list(std), "layout": "NHWC uint8"}
            return {"pixels": pixels}, {**record, "encoding": "uint8_normalized", **extra}
    return {"images": np.ascontiguousarray(images, np.float32)}, {**record, "encoding": "float32"}


def _noise(shape: list[int], recipe: dict[str, Any]) -> np.ndarray:
    chw = (int(shape[0]), int(shape[1]), int(shape[2]))
    return noise_images(chw, int(recipe["batch"]), int(recipe["count"])).images


def decode_inputs(arrays: dict[str, np.ndarray], record: dict[str, Any]) -> np.ndarray:
    encoding = record.get("encoding")
    if encoding == "seeded_noise":
        return _noise(record["shape"], record)
    if encoding == "uint8_normalized":
        return normalize_uint8(arrays["pixels"], record["mean"], record["std"])
    if encoding == "float32":
        return np.ascontiguousarray(arrays["images"], np.float32)
    raise ValueError(f"unknown input encoding {encoding!r}")


def write_reference(
    directory: Path,
    gate: GateImages,
    outputs: np.ndarray | dict[str, np.ndarray],
    *,
    precision: str,
    batch: int,
    preprocessing: dict[str, Any],
    rule: dict[str, Any],
) -> Path:
    """Write ``reference-<digest>.npz`` into ``directory`` (a scratch directory) and return it."""
    arrays, inputs = encode_inputs(gate, batch, preprocessing)
    inputs["sha256"] = images_sha256(gate.images)
    features = isinstance(outputs, dict)
    named = outputs if isinstance(outputs, dict) else {"logits": outputs}
    meta = {
        "format": FORMAT,
        "inputs": inputs,
        "source": gate.source,
        "dataset": gate.dataset,
        "labels": gate.labels is not None,
        "features": features,
        "outputs": {k: list(v.shape) for k, v in named.items()},
        "precision": precision,
        "batch": batch,
        "rule": rule,
    }
    for name, value in named.items():
        arrays[OUTPUT_PREFIX + name] = np.ascontiguousarray(value, np.float32)
    if gate.labels is not None:
        arrays["labels"] = np.asarray(gate.labels, np.int64)
    text = json.dumps(meta, sort_keys=True)
    digest = hashlib.sha256(text.encode())
    for key in sorted(arrays):
        digest.update(key.encode() + arrays[key].tobytes())
    path = directory / f"reference-{digest.hexdigest()[:16]}.npz"
    with open(path, "wb") as fh:  # a file object: savez would append .npz to a str path
        np.savez_compressed(fh, meta=np.asarray(text), **arrays)
    return path


def read_reference(path: Path) -> Reference:
    """Load and decode a reference; a ReferenceError names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ReferenceError(f"reference {path} cannot be read ({exc}): re-export") from None
    if meta.get("format") != FORMAT:
        raise ReferenceError(
            f"reference {path} has format {meta.get('format')!r}, this version reads {FORMAT}: "
            "install the partialnet-export version that wrote it, or re-export"
        )
    try:
        images = decode_inputs(arrays, meta["inputs"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ReferenceError(f"reference {path}: its inputs cannot be decoded ({exc})") from None
    if images_sha256(images) != meta["inputs"].get("sha256"):
        raise ReferenceError(
            f"reference {path}: the decoded inputs differ from the export's (sha256); this "
            f"numpy {np.__version__} does not regenerate them ({meta['inputs']['encoding']})"
        )
    outputs = {
        key[len(OUTPUT_PREFIX) :]: value
        for key, value in arrays.items()
        if key.startswith(OUTPUT_PREFIX)
    }
    if sorted(outputs) != sorted(meta.get("outputs", {})) or not outputs:
        raise ReferenceError(f"reference {path} lacks the outputs its record lists")
    labels = arrays.get("labels")
    gate = GateImages(images, labels, str(meta.get("source")), meta.get("dataset"))
    return Reference(gate, outputs, meta)
