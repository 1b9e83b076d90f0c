"""CoreML export: options, the saved ML program's spec, atomic replacement, image algebra.

Off macOS a package is checked here by reading its spec; the parity test below predicts with
Core ML on macOS only (tests/runtimes/test_coreml_interpreter.py simulates it anywhere).
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import partialnet
from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure

# The export parity gate's own tolerances, so these checks move with it.
from partialnet.export.gate.parity import FP16_MIN_COSINE, FP32_MAX_REL, FP32_MIN_COSINE
from partialnet.export.targets.coreml.convert import (
    CLASSIFIER_OUTPUTS,
    ML_PROGRAM_TARGETS,
    CoreMLOptions,
    coreml_unverified_reason,
    export_coreml,
    image_preprocessing,
    wrap_for_coreml,
)
from partialnet.export.targets.coreml.spec import coreml_spec_summary
from partialnet.inference import ChannelGate, InferencePartialNet, to_fp16

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra [coreml])")

SIZE = (224, 224)
# Ops that a clean inference form never needs: BN must be folded away, channel splits must be
# static slices (split/concat), not index gathers or scatters.
FORBIDDEN_OPS = ("batch_norm", "gather", "gather_nd", "gather_along_axis")


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics, so folding bugs cannot hide behind mean 0 / var 1."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


_MODELS: dict[str, InferencePartialNet] = {}


def inference_model(variant: str) -> InferencePartialNet:
    if variant not in _MODELS:
        eager = _randomize_bn(partialnet.create_model(variant)).eval()
        _MODELS[variant] = partialnet.reparameterize(eager, SIZE)
    return _MODELS[variant]


class _Exports:
    """Convert each (variant, options) once per test module; tests share the packages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[tuple, tuple[Path, dict, dict]] = {}

    def get(self, variant: str, **options) -> tuple[Path, dict, dict]:
        key = (variant, tuple(sorted(options.items())))
        if key not in self.done:
            opts = CoreMLOptions(**options)
            path = self.root / f"{variant}-{len(self.done)}.mlpackage"
            facts = export_coreml(inference_model(variant), path, opts)
            self.done[key] = (path, facts, coreml_spec_summary(path))
        return self.done[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> _Exports:
    return _Exports(tmp_path_factory.mktemp("coreml"))


def _labels(n: int = 1000) -> list[str]:
    return [f"class_{i}" for i in range(n)]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- options and usage errors


def test_option_defaults_are_valid() -> None:
    opts = CoreMLOptions()
    assert (opts.precision, opts.minimum_deployment_target, opts.batch) == ("fp32", "iOS16", 1)
    assert CoreMLOptions(class_labels=["a", "b"]).class_labels == ("a", "b")


def test_every_accepted_target_exists_in_coremltools() -> None:
    assert all(hasattr(ct.target, name) for name in ML_PROGRAM_TARGETS)
    assert all(getattr(ct.target, n) >= ct.target.iOS15 for n in ML_PROGRAM_TARGETS)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"precision": "int8"}, "valid: fp32, fp16"),
        ({"minimum_deployment_target": "ios16"}, "did you mean 'iOS16'"),
        ({"minimum_deployment_target": "iOS14"}, "predates ML programs"),
        ({"minimum_deployment_target": "macOS11"}, "predates ML programs"),
        ({"minimum_deployment_target": "Android14"}, "valid: iOS15"),
        ({"batch": 0}, "positive integer"),
        ({"batch": True}, "positive integer"),
        ({"class_labels": []}, "pass None"),
        ({"class_labels": "cat"}, "list of strings"),
        ({"class_labels": ["cat", "dog", "cat"]}, "repeated: ['cat']"),
    ],
)
def test_bad_options_name_the_fix(kwargs: dict, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        CoreMLOptions(**kwargs)
    assert needle in str(info.value)


def test_label_count_must_match_classes(tmp_path: Path) -> None:
    path = tmp_path / "m.mlpackage"
    with pytest.raises(UsageError, match="999 class labels given for a model with 1000"):
        export_coreml(inference_model("t0"), path, CoreMLOptions(class_labels=_labels(999)))
    assert not path.exists()


def test_refuses_eager_fp16_copy_and_wrong_suffix(tmp_path: Path) -> None:
    model = inference_model("t0")
    with pytest.raises(UsageError, match="reparameterize"):
        export_coreml(partialnet.create_model("t0"), tmp_path / "a.mlpackage", CoreMLOptions())
    with pytest.raises(UsageError, match="precision='fp16'"):
        export_coreml(to_fp16(model), tmp_path / "b.mlpackage", CoreMLOptions())
    with pytest.raises(UsageError, match=r"\.mlpackage"):
        export_coreml(model, tmp_path / "c.mlmodel", CoreMLOptions())
    assert list(tmp_path.iterdir()) == []


def test_unverified_reason_only_when_neither_core_ml_nor_the_interpreter_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Off macOS the MIL interpreter verifies (simulated) with the tested coremltools.
    assert coreml_unverified_reason() is None
    if sys.platform == "darwin":
        return
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda n: "10.0" if n == "coremltools" else real(n)
    )
    reason = coreml_unverified_reason()
    assert reason.startswith(f"CoreML prediction needs macOS ({platform.system()} here)")
    assert "tested with coremltools 9.x" in reason


# ---------------------------------------------------------------- the saved ML program


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("variant", ["t0", "t1"])
def test_spec_of_tensor_model(exports: _Exports, variant: str, precision: str) -> None:
    path, facts, spec = exports.get(variant, precision=precision)
    model = inference_model(variant)

    assert spec["model_type"] == "mlProgram"
    assert spec["inputs"] == [
        {"name": "input", "type": "multiArrayType", "shape": [1, 3, 224, 224], "dtype": "FLOAT32"}
    ]
    # float32 output even for fp16 (coremltools casts at the edge), as the ONNX export.
    assert spec["outputs"] == [
        {"name": "logits", "type": "multiArrayType", "shape": [1, 1000], "dtype": "FLOAT32"}
    ]
    ops = spec["ops"]
    assert not [op for op in ops if op in FORBIDDEN_OPS or op.startswith("scatter")], ops
    # Each channel gate takes its statistics with reductions (mean and variance).
    gates = sum(isinstance(m, ChannelGate) for m in model.modules())
    assert ops["reduce_mean"] >= 2 * gates
    assert ops["conv"] > 0

    meta = spec["metadata"]  # the export's one schema, encoded as ONNX and OpenVINO carry it
    assert meta["variant"] == variant
    assert json.loads(meta["input_size"]) == [224, 224]
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert meta["precision"] == precision
    assert meta["toolchain"] == f"partialnet-export {partialnet.__version__}"
    assert spec["author"] and variant in spec["short_description"]

    if precision == "fp16":
        assert set(spec["weight_dtypes"]) == {"FLOAT16"}
        assert ops["cast"] >= 2  # fp32 input -> fp16, fp16 logits -> fp32
    else:
        assert set(spec["weight_dtypes"]) == {"FLOAT32"}
        assert "cast" not in ops

    assert facts["input"] == spec["inputs"][0]
    assert facts["outputs"] == ["logits"]
    assert facts["ops"] == dict(ops)
    assert facts["precision"] == precision and facts["coremltools"] == ct.__version__
    assert not list(path.parent.glob(".*.partial"))


def test_image_classifier_spec_and_normalization(exports: _Exports) -> None:
    path, facts, spec = exports.get("t0", image_input=True, class_labels=tuple(_labels()))
    assert spec["inputs"] == [
        {"name": "image", "type": "imageType", "shape": [224, 224], "color_space": "RGB"}
    ]
    assert [(o["name"], o["type"]) for o in spec["outputs"]] == list(
        zip(CLASSIFIER_OUTPUTS, ("stringType", "dictionaryType"), strict=True)
    )
    assert spec["predicted_feature"] == "classLabel"
    assert spec["ops"]["classify"] == 1
    assert facts["outputs"] == list(CLASSIFIER_OUTPUTS)
    assert spec["metadata"]["image_input"] == "true"

    # The program's first ops are the preprocessing: read their constants from the package
    # and check that they compute (pixel / 255 - mean) / std exactly as the model expects.
    chain = _leading_elementwise(path, "image")
    assert [op for op, _ in chain] == ["mul", "add", "mul"]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 224, 224)).astype(np.float32)
    y = pixels
    for op, const in chain:
        y = y * const if op == "mul" else y + const
    mean = np.array(inference_model("t0").cfg.meta.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(inference_model("t0").cfg.meta.std, np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, (pixels / 255.0 - mean) / std, rtol=0, atol=2e-6)


def _leading_elementwise(path: Path, input_name: str) -> list[tuple[str, np.ndarray]]:
    """The mul/add ops that follow the input, with their (immediate) constant operands."""
    spec = ct.utils.load_spec(str(path))
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    consts = {
        op.outputs[0].name: op.attributes["val"] for op in block.operations if op.type == "const"
    }
    chain, current = [], input_name
    for op in block.operations:
        if op.type not in ("mul", "add") or op.inputs["x"].arguments[0].name != current:
            continue
        value = consts[op.inputs["y"].arguments[0].name].immediateValue.tensor.floats.values
        chain.append((op.type, np.array(value, np.float32).reshape(1, -1, 1, 1)))
        current = op.outputs[0].name
    return chain


def test_image_algebra_on_traced_wrapper() -> None:
    """CoreML's scale*pixel+bias, then the traced wrapper, equals the model on normalized input."""
    model = inference_model("t0")
    opts = CoreMLOptions(image_input=True)
    scale, bias, _ = image_preprocessing(model)
    traced = torch.export.export(wrap_for_coreml(model, opts), (torch.zeros(1, 3, *SIZE),))
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, 3, *SIZE), generator=gen).float()
    coreml_pre = pixels * scale + torch.tensor(bias).view(1, 3, 1, 1)
    mean = torch.tensor(model.cfg.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.meta.std).view(1, 3, 1, 1)
    with torch.no_grad():
        got = traced.module()(coreml_pre)
        ref = model((pixels / 255.0 - mean) / std)
    assert (got - ref).abs().max() <= FP32_MAX_REL * ref.abs().max()


# ---------------------------------------------------------------- atomic replacement


def test_failed_conversion_names_op_and_keeps_old_package(
    exports: _Exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _, _ = exports.get("t0", precision="fp32")
    dest = tmp_path / "model.mlpackage"
    shutil.copytree(good, dest)
    before = _tree(dest)

    def unsupported(*args, **kwargs):
        raise NotImplementedError("PyTorch convert function for op 'clamp' not implemented.")

    monkeypatch.setattr(ct, "convert", unsupported)
    with pytest.raises(ExportFailure) as info:
        export_coreml(inference_model("t0"), dest, CoreMLOptions())
    message = str(info.value)
    assert "torch op 'clamp'" in message and "stages.0.0.mixer.gate" in message
    assert _tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]


def test_failed_save_keeps_old_package_and_success_replaces_it(
    exports: _Exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _, _ = exports.get("t0", precision="fp32")
    new, _, _ = exports.get("t0", precision="fp16")
    dest = tmp_path / "model.mlpackage"
    shutil.copytree(old, dest)
    before = _tree(dest)
    # No second conversion: "convert" hands back the fp16 package already built.
    monkeypatch.setattr(
        ct, "convert", lambda *a, **k: ct.models.MLModel(str(new), skip_model_load=True)
    )
    real_save = ct.models.MLModel.save

    def half_save(self, path):
        Path(path).mkdir()
        (Path(path) / "Manifest.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", half_save)
    with pytest.raises(ExportFailure, match="disk full"):
        export_coreml(inference_model("t0"), dest, CoreMLOptions())
    assert _tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]

    monkeypatch.setattr(ct.models.MLModel, "save", real_save)
    export_coreml(inference_model("t0"), dest, CoreMLOptions(precision="fp16"))
    weights = "Data/com.apple.CoreML/weights/weight.bin"
    assert _tree(dest)[weights] == _tree(new)[weights] != before[weights]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]


# ---------------------------------------------------------------- parity (macOS only)


# On a device; the simulated parity (MIL interpreter, any OS) is in tests/runtimes.
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts on macOS only")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("variant", ["t0", "t1"])
def test_parity_against_torch(exports: _Exports, variant: str, precision: str) -> None:
    path, _, _ = exports.get(variant, precision=precision)
    units = ct.ComputeUnit.CPU_ONLY if precision == "fp32" else ct.ComputeUnit.ALL
    mlmodel = ct.models.MLModel(str(path), compute_units=units)
    model = copy.deepcopy(inference_model(variant))
    rng = np.random.default_rng(0)
    refs, outs = [], []
    for _ in range(4):
        x = rng.standard_normal((1, 3, *SIZE), dtype=np.float32)
        with torch.no_grad():
            refs.append(model(torch.from_numpy(x)).numpy())
        outs.append(np.asarray(mlmodel.predict({"input": x})["logits"], np.float32))
    ref, out = np.concatenate(refs).astype(np.float64), np.concatenate(outs).astype(np.float64)
    cosine = (ref * out).sum() / (np.linalg.norm(ref) * np.linalg.norm(out))
    if precision == "fp32":
        assert np.abs(ref - out).max() <= FP32_MAX_REL * np.abs(ref).max()
        assert cosine >= FP32_MIN_COSINE
    else:
        assert cosine >= FP16_MIN_COSINE


def test_features_backbone_with_static_batch(tmp_path: Path) -> None:
    eager = _randomize_bn(partialnet.create_model("t0", features_only=True)).eval()
    model = partialnet.reparameterize(eager, SIZE)
    path = tmp_path / "backbone.mlpackage"
    facts = export_coreml(model, path, CoreMLOptions(batch=2))
    spec = coreml_spec_summary(path)
    assert spec["inputs"][0]["shape"] == [2, 3, 224, 224]
    shapes = [(o["name"], o["shape"]) for o in spec["outputs"]]
    assert shapes == [
        ("feat0", [2, 32, 56, 56]),
        ("feat1", [2, 64, 28, 28]),
        ("feat2", [2, 128, 14, 14]),
        ("feat3", [2, 256, 7, 7]),
    ]
    assert facts["outputs"] == [name for name, _ in shapes]
    # The four stage-output affines (x * scale + shift, nothing to fold them into) become
    # batch_norm ops through coremltools' fuse_elementwise_to_batchnorm; no other BN is left.
    assert spec["ops"]["batch_norm"] == 4
    with pytest.raises(UsageError, match="features-only"):
        export_coreml(model, tmp_path / "x.mlpackage", CoreMLOptions(class_labels=_labels()))


def test_package_carries_the_exports_one_metadata_schema(
    digits_checkpoint: Path, tmp_path: Path
) -> None:
    """The CoreML package's user-defined metadata is the export's one schema, key for key
    and value for value as the ONNX model's metadata_props carry it, plus image_input."""
    onnx = pytest.importorskip("onnx")
    from partialnet.export import export

    manifest = export(
        digits_checkpoint,
        targets="onnx,coreml",
        output_dir=tmp_path,
        verify=False,  # the metadata is the point here, not the numbers
    )
    paths = {a.target: tmp_path / a.path for a in manifest.artifacts}
    from_onnx = {p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}
    from_coreml = coreml_spec_summary(paths["coreml"])["metadata"]
    assert from_onnx and from_onnx["variant"] == "t0"
    assert {k: from_coreml.get(k) for k in from_onnx} == from_onnx
    assert from_coreml["image_input"] == "false"
