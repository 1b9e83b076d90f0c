"""Saved CoreML packages through the MIL reference interpreter and the simulated runner.

Packages are converted once per module (``export_coreml``) and read back from disk. The
parity rules are the export gate's (``partialnet.export.gate.parity.compare``): fp32 max|diff| <=
1e-4 x max|ref| and cosine >= 0.99999; fp16 cosine >= 0.999 and top-1 >= 99% (fp16 ties
counted as agreeing, as the gate does). The interpreter approximates a device; these tests
check the programs' semantics and the fp16 program's rounding, not an Apple device.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import partialnet
from partialnet.errors import InputShapeError, UsageError
from partialnet.export.gate.parity import FP32_MAX_REL, compare, noise_images, run_parity
from partialnet.export.options import Precision
from partialnet.export.targets.coreml.convert import (
    CLASSIFIER_OUTPUTS,
    CoreMLOptions,
    export_coreml,
)
from partialnet.runtimes import RuntimeUnavailableError, available_runtimes, open_runner

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra [coreml])")
from conftest import corrupt_coreml_weight  # noqa: E402

from partialnet.runtimes.coreml_mil import (  # noqa: E402
    MilInterpreter,
    UnsupportedOpError,
    coremltools_unsupported_reason,
)

# The package loader is coremltools' private API; outside the pinned range nothing here runs.
pytestmark = pytest.mark.skipif(
    coremltools_unsupported_reason() is not None, reason=str(coremltools_unsupported_reason())
)

PRECISIONS = ["fp32", "fp16"]
IMAGES = 8  # seeded normal images per package: enough for cosine; top-1 needs all to agree


def _eager(variant: str) -> torch.nn.Module:
    from conftest import randomize

    torch.manual_seed(0)
    return randomize(partialnet.create_model(variant)).eval()


class _Packages:
    """Each (name, options) converted once; eager and inference models kept beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[tuple, Path] = {}
        self.eager: dict[str, torch.nn.Module] = {}

    def model(self, name: str) -> torch.nn.Module:
        if name not in self.eager:
            if name == "upstream":
                from conftest import fixture_path

                model = partialnet.load_checkpoint(fixture_path("upstream_t0_224.ckpt"))
            else:
                model = _eager(name.split("@")[0])
            self.eager[name] = model
        return self.eager[name]

    def get(self, name: str, size: int, **options) -> Path:
        key = (name, size, tuple(sorted(options.items())))
        if key not in self.done:
            path = self.root / f"{name}-{size}-{len(self.done)}.mlpackage"
            inference = partialnet.reparameterize(self.model(name), (size, size))
            with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
                export_coreml(inference, path, CoreMLOptions(**options))
            self.done[key] = path
        return self.done[key]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> _Packages:
    return _Packages(tmp_path_factory.mktemp("coreml-interp"))


def _parity(model: torch.nn.Module, path: Path, size: int, precision: str, images: int = IMAGES):
    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    with open_runner("coreml", path, simulate=True) as runner:
        data = noise_images((3, size, size), 1, images)
        return run_parity(reference, runner.infer, data, 1, Precision(precision))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(("variant", "size"), [("t0", 64), ("t1", 224)])
def test_package_matches_eager_model(packages, variant: str, size: int, precision: str) -> None:
    path = packages.get(variant, size, precision=precision)
    result = _parity(packages.model(variant), path, size, precision)
    assert result.passed, result.summary()
    if precision == "fp16":
        # Rounded between ops, not float32 in disguise: an fp16 program differs from the eager
        # model by far more than float32 re-association (~1e-6) does.
        assert result.max_rel > 1e-5, result.summary()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_authors_checkpoint_reproduces_their_logits(packages, precision: str) -> None:
    from conftest import fixture_path

    x = np.load(fixture_path("upstream_t0_224_input.npy"))
    ref = np.load(fixture_path("upstream_t0_224_logits.npy"))
    path = packages.get("upstream", 224, precision=precision, batch=len(x))
    interpreter = MilInterpreter.from_package(path)
    out = interpreter.predict({"input": x})["logits"]
    assert out.dtype == np.float32 and out.shape == ref.shape
    result = compare(ref, out, Precision(precision))
    assert result.passed, result.summary()


def test_corrupted_weight_fails_parity(packages, tmp_path: Path) -> None:
    good = packages.get("t0", 64, precision="fp32")
    bad = corrupt_coreml_weight(shutil.copytree(good, tmp_path / "bad.mlpackage"))
    assert _parity(packages.model("t0"), good, 64, "fp32", images=2).passed
    result = _parity(packages.model("t0"), bad, 64, "fp32", images=2)
    # 16 of the stem's 1,536 weights negated: a subtle defect, still 10x over the fp32 bound.
    assert not result.passed and result.max_rel > 10 * FP32_MAX_REL, result.summary()


def test_unknown_op_in_a_saved_package_is_named(tmp_path: Path) -> None:
    from coremltools.converters.mil.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def program(x):
        return mb.round(x=mb.relu(x=x))

    path = tmp_path / "round.mlpackage"
    ct.convert(program, convert_to="mlprogram", skip_model_load=True).save(str(path))
    with pytest.raises(UnsupportedOpError, match=r"op 'round'") as err:
        open_runner("coreml", path, simulate=True).activate()
    assert isinstance(err.value, RuntimeUnavailableError)


def test_image_classifier_predicts_like_core_ml(packages) -> None:
    from PIL import Image

    labels = tuple(f"class_{i}" for i in range(1000))
    path = packages.get("t0", 64, precision="fp32", image_input=True, class_labels=labels)
    interpreter = MilInterpreter.from_package(path)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

    out = interpreter.predict({"image": pixels})
    assert set(out) == set(CLASSIFIER_OUTPUTS)
    label, probs = out[CLASSIFIER_OUTPUTS[0]], out[CLASSIFIER_OUTPUTS[1]]
    assert list(probs) == list(labels) and label == max(probs, key=probs.get)
    # The reference: the authors' normalization on the same pixels, then the eager model.
    model = packages.model("t0")
    mean = torch.tensor(model.cfg.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.meta.std).view(1, 3, 1, 1)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        ref = torch.softmax(model((x / 255.0 - mean) / std), dim=-1).numpy()[0]
    got = np.array([probs[k] for k in labels])
    # fp32 rule of the gate, on probabilities (cosine on these ~uniform vectors says little).
    assert np.abs(got - ref).max() <= 1e-4 * ref.max()
    assert label == labels[int(ref.argmax())]

    assert interpreter.predict({"image": Image.fromarray(pixels)}) == out
    with pytest.raises(InputShapeError, match="64x64"):
        interpreter.predict({"image": Image.fromarray(pixels).resize((32, 32))})
    with pytest.raises(TypeError, match="uint8"):
        interpreter.predict({"image": pixels.astype(np.float32)})
    with pytest.raises(UsageError, match="image input"):
        open_runner("coreml", path, simulate=True).activate()


def test_simulated_runner_says_so(packages) -> None:
    path = packages.get("t0", 64, precision="fp16")
    with open_runner("coreml", path, simulate=True) as runner:
        info = runner.info()
        with pytest.raises(InputShapeError, match="fixed batch of 1"):
            runner.infer(np.zeros((2, 3, 64, 64), np.float32))
    assert info.device == "simulated" and info.extra["simulated"] is True
    assert info.provider == "mil-interpreter" and info.version == ct.__version__
    assert info.precision == "fp16"
    assert info.input_shape == (1, 3, 64, 64) and info.batch_range == (1, 1)
    assert {"conv", "clip", "layer_norm", "cast"} <= set(info.extra["ops"])
    # A thread count is taken (as every runner takes one) but cannot be applied: said so.
    with open_runner("coreml", path, simulate=True, threads=1) as runner:
        assert "not controllable" in runner.info().extra["threads"]


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_simulation_is_the_default_off_macos(packages) -> None:
    assert available_runtimes()["coreml"] is None
    path = packages.get("t0", 64, precision="fp32")
    with open_runner("coreml", path) as runner:
        assert runner.info().extra["simulated"] is True
    with pytest.raises(RuntimeUnavailableError, match=r"needs macOS.*simulate=True"):
        open_runner("coreml", path, simulate=False).activate()


def test_untested_coremltools_is_refused_in_one_line(monkeypatch, tmp_path: Path) -> None:
    import importlib.metadata

    real = importlib.metadata.version
    fake = {"coremltools": "10.1"}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: fake.get(name) or real(name))
    reason = coremltools_unsupported_reason()
    assert reason is not None and "\n" not in reason
    assert "tested with coremltools 9.x; this is 10.1" in reason and ">=9.0,<10.0" in reason
    with pytest.raises(RuntimeUnavailableError, match=r"tested with coremltools 9\.x"):
        open_runner("coreml", tmp_path / "x.mlpackage", simulate=True).activate()
    fake["coremltools"] = "8.3"
    assert "this is 8.3" in coremltools_unsupported_reason()
