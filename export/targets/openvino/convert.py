"""OpenVINOFromONNX: ONNX -> OpenVINO IR, saved as one directory holding the .xml/.bin pair
(so the pair is placed, and replaced, as a unit), fp16-compressed on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialnet.errors import first_line
from partialnet.export.errors import ExportFailure
from partialnet.export.output.metadata import encode_metadata
from partialnet.runtimes.base import import_sdk


def ir_xml(directory: Path) -> Path:
    """The .xml inside an IR directory written by ``export_openvino``."""
    return directory / f"{directory.stem}.xml"


def export_openvino(
    onnx_path: Path, directory: Path, *, compress_to_fp16: bool, metadata: dict[str, Any]
) -> dict[str, object]:
    """Convert ``onnx_path`` and save ``directory/<stem>.xml`` + ``.bin``.

    OpenVINO's save_model compresses weights to fp16 unless told not to; an fp32 IR keeps
    fp32 weights (compression costs ~4e-4 relative error, beyond the fp32 gate).
    """
    ov = import_sdk("openvino", "openvino", "OpenVINO IR export")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportFailure(
            f"OpenVINO could not convert {onnx_path.name}: {first_line(exc, None)}"
        ) from exc
    for key, value in encode_metadata(metadata).items():
        model.set_rt_info(value, ["partialnet", key])
    directory.mkdir(parents=True, exist_ok=True)
    # A full disk shows here as "basic_ios::clear: iostream error", no errno: the export's
    # free-space check (partialnet.export.api) names it.
    ov.save_model(model, str(ir_xml(directory)), compress_to_fp16=compress_to_fp16)
    return {"openvino": ov.__version__, "compressed_to_fp16": compress_to_fp16}
