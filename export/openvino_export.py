"""OpenVINOFromONNX: ONNX -> OpenVINO IR (.xml + .bin), fp16-compressed on request."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from partialnet.errors import missing_dependency
from partialnet.export.errors import ExportFailure
from partialnet.export.files import check_destination


def export_openvino(
    onnx_path: Path, xml_path: Path, *, compress_to_fp16: bool, metadata: dict[str, str]
) -> dict[str, object]:
    """Convert and save; the .xml/.bin pair is written beside the final names and renamed
    into place (.bin first, so a visible .xml always has its weights)."""
    try:
        import openvino as ov
    except ImportError:
        raise missing_dependency("openvino", "openvino", "OpenVINO IR export") from None
    bin_path = xml_path.with_suffix(".bin")
    check_destination(xml_path, is_dir=False)
    check_destination(bin_path, is_dir=False)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportFailure(
            f"OpenVINO could not convert {onnx_path.name}: {str(exc).splitlines()[0]}"
        ) from exc
    for key, value in metadata.items():
        model.set_rt_info(value, ["partialnet", key])
    tmp_dir = Path(tempfile.mkdtemp(dir=xml_path.parent, prefix=f".{xml_path.stem}.ov."))
    try:
        tmp_xml = tmp_dir / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)
        os.replace(tmp_xml, xml_path)
    finally:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    return {"openvino": ov.__version__, "compressed_to_fp16": compress_to_fp16}
