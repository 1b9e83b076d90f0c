"""partialnet-bench check: the export's reference, the gate repeated on the device, bad input,
a tampered artifact only the numbers catch, a skipped runtime, and the fleet report.

Two real exports of the trained digits t0 at 64 px are shared (module scope): a classifier
checked on 20 labelled digits (uint8-encoded reference, labels, accuracy) and a backbone
(``--features``) checked on seeded noise (the noise recipe, four named outputs). Every
tolerance is the gate's own (partialnet.export.gate.parity); on the export machine the
check's figures must equal the manifest's exactly, so those asserts use ==.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partialnet.bench import cli
from partialnet.bench.check.fleet import fleet_table
from partialnet.bench.check.run import PARITY_FIGURES
from partialnet.export.gate import parity as gate
from partialnet.export.gate.reference import read_reference, write_reference
from partialnet.files import sha256_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CHECK_FAST = ["--iterations", "3", "--warmup", "0"]


def _export(out: Path, ckpt: Path, *extra: str) -> Path:
    from partialnet.export.cli.main import main as export_main

    argv = ["--checkpoint", str(ckpt), "--target", "onnx", "--output", str(out), *extra]
    code = export_main(argv)
    assert code == 0
    return out


@pytest.fixture(scope="module")
def small_val(digits_folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two held-out digits per class: 20 labelled images (fast, still every class)."""
    _, val = digits_folders
    root = tmp_path_factory.mktemp("val20")
    for class_dir in sorted(val.iterdir()):
        (root / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:2]:
            shutil.copy(image, root / class_dir.name / image.name)
    return root


@pytest.fixture(scope="module")
def classifier(
    digits_checkpoint: Path, small_val: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _export(tmp_path_factory.mktemp("cls"), digits_checkpoint, "--eval-data", str(small_val))


@pytest.fixture(scope="module")
def backbone(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("bb"), digits_checkpoint, "--features")


def _check(capsys: pytest.CaptureFixture[str], directory: Path, out: Path) -> tuple[int, str]:
    code = cli.main(["check", str(directory), "--output", str(out), *CHECK_FAST])
    return code, capsys.readouterr().err


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "export"))


# --- the reference -------------------------------------------------------------------------


def test_reference_holds_the_gate_inputs_labels_and_eager_outputs(
    classifier: Path, small_val: Path
) -> None:
    import torch

    import partialnet

    entry = _manifest(classifier)["artifacts"][0]
    path = classifier / entry["reference"]["path"]
    assert entry["reference"]["sha256"] == sha256_path(path)
    ref = read_reference(path)
    assert ref.meta["inputs"]["encoding"] == "uint8_normalized"
    model = partialnet.load_checkpoint(
        Path(__file__).parents[1] / "fixtures" / "digits_t0_64.ckpt"
    ).eval()
    files = sorted(small_val.rglob("*.png"))
    # The same preprocessing as the gate: the decoded uint8 pixels give its float32 exactly.
    expected = partialnet.preprocess_batch(files, model)
    np.testing.assert_array_equal(ref.gate.images, expected)
    np.testing.assert_array_equal(ref.gate.labels, [int(f.parent.name) for f in files])
    with torch.inference_mode():  # the gate's batches (1): the stored logits are the eager's
        eager = np.concatenate([model(torch.from_numpy(x[None])).numpy() for x in expected])
    np.testing.assert_array_equal(ref.outputs["logits"], eager)
    assert ref.meta["rule"]["limits"] == {
        "max_rel": gate.FP32_MAX_REL,
        "min_cosine": gate.FP32_MIN_COSINE,
    }


def test_noise_reference_is_a_recipe(backbone: Path) -> None:
    entry = _manifest(backbone)["artifacts"][0]
    ref = read_reference(backbone / entry["reference"]["path"])
    assert ref.meta["inputs"]["encoding"] == "seeded_noise"
    assert sorted(ref.outputs) == ["feat0", "feat1", "feat2", "feat3"]
    # A backbone's noise gate runs BACKBONE_PARITY_IMAGES (8), a classifier's 64.
    assert len(ref.gate.images) == gate.BACKBONE_PARITY_IMAGES == 8
    assert all(out.shape[0] == 8 for out in ref.outputs.values())
    want = gate.noise_images((3, 64, 64), 1, gate.BACKBONE_PARITY_IMAGES)
    np.testing.assert_array_equal(ref.gate.images, want.images)
    with np.load(backbone / entry["reference"]["path"], allow_pickle=False) as data:
        assert "pixels" not in data.files and "images" not in data.files


def test_t1_224_reference_fits_the_budget(tmp_path: Path) -> None:
    """Worst case for the 12 MB budget: 64 images of incompressible random pixels at 224 px
    and 1000 logits each (uint8 9.6 MB + 0.26 MB before compression)."""
    rng = np.random.default_rng(0)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = rng.integers(0, 256, (64, 224, 224, 3), dtype=np.uint8)
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    normalized = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    images = np.ascontiguousarray(normalized.transpose(0, 3, 1, 2))
    labels = rng.integers(0, 1000, 64)
    data = gate.GateImages(images, labels, "eval images", "val/")
    logits = rng.standard_normal((64, 1000), dtype=np.float32)
    rule = gate.rule_record(gate.Precision.INT8, features=False)
    prep = {"mean": mean, "std": std}
    path = write_reference(
        tmp_path, data, logits, precision="int8", batch=1, preprocessing=prep, rule=rule
    )
    size = path.stat().st_size
    print(f"t1 224 px, 64 images: reference {size / 1e6:.2f} MB")
    assert size <= 12e6
    ref = read_reference(path)
    np.testing.assert_array_equal(ref.gate.images, images)
    assert ref.meta["inputs"]["encoding"] == "uint8_normalized"


def test_t1_224_backbone_reference_fits_the_budget(tmp_path: Path) -> None:
    """A backbone on seeded noise: the recipe and t1's four maps at 224 px in float32 for the
    gate's 8 images, filled with incompressible noise (worst case: 9.0 MB before
    compression; a real t1's maps took 8.4 MB)."""
    from partialnet.backbone import feature_shapes
    from partialnet.config import get_config

    noise = gate.noise_images((3, 224, 224), 1, gate.BACKBONE_PARITY_IMAGES)
    rng = np.random.default_rng(0)
    maps = {
        out["name"]: rng.standard_normal(out["shape"], dtype=np.float32)
        for out in feature_shapes(get_config("t1").stage_dims, (224, 224), len(noise.images))
    }
    rule = gate.rule_record(gate.Precision.FP32, features=True)
    prep = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    path = write_reference(
        tmp_path, noise, maps, precision="fp32", batch=1, preprocessing=prep, rule=rule
    )
    size = path.stat().st_size
    print(f"t1 224 px backbone, {len(noise.images)} noise images: reference {size / 1e6:.2f} MB")
    assert size <= 12e6
    assert read_reference(path).outputs["feat0"].shape == (8, 48, 56, 56)


# --- the check on the export machine ---------------------------------------------------------


@pytest.mark.parametrize("which", ["classifier", "backbone"])
def test_check_repeats_the_gate_exactly(
    which: str, request: pytest.FixtureRequest, tmp_path: Path, capsys
) -> None:
    directory = request.getfixturevalue(which)
    code, err = _check(capsys, directory, tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (row,) = report["artifacts"]
    gate_record = _manifest(directory)["artifacts"][0]["parity"]
    assert row["status"] == "pass" and row["same_as_gate"] is True
    for key in PARITY_FIGURES:  # same inputs, same outputs, same rule: the same numbers
        assert row["parity"][key] == gate_record[key], key
    if which == "classifier":
        assert row["parity"]["accuracy"] == gate_record["accuracy"]
    timed = {c["batch"]: c for c in row["timing"]}
    assert set(timed) == {1}
    assert timed[1]["latency_ms"]["p50"] > 0 and timed[1]["iterations"] == 3
    env = report["environment"]
    assert env["cpu_model"] and "isa" in env and env["packages"]["onnxruntime"]
    assert "| pass |" in (tmp_path / "out" / "report.md").read_text()


def test_tampered_artifact_with_rewritten_sha_fails_on_the_numbers(
    classifier: Path, tmp_path: Path, capsys
) -> None:
    import onnx
    from onnx import numpy_helper

    directory = _copy(classifier, tmp_path)
    manifest = _manifest(directory)
    entry = manifest["artifacts"][0]
    model = onnx.load(str(directory / entry["path"]))
    # The largest weight scaled by 1.01: a 1% change to one layer, plausible-looking.
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    scaled = numpy_helper.to_array(init) * np.float32(1.01)
    init.CopyFrom(numpy_helper.from_array(scaled, init.name))
    onnx.save(model, str(directory / entry["path"]))
    entry["sha256"] = sha256_path(directory / entry["path"])  # the manifest "agrees"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    code, _ = _check(capsys, directory, tmp_path / "out")
    assert code == 1
    (row,) = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]
    assert row["status"] == "fail" and row["same_as_gate"] is False
    assert any("max_rel" in rule for rule in row["parity"]["failed_rules"])


def test_missing_runtime_is_skipped_with_the_reason(
    classifier: Path, tmp_path: Path, capsys
) -> None:
    from partialnet.runtimes import available_runtimes

    reason = available_runtimes()["tensorrt"]
    if reason is None:
        pytest.skip("TensorRT runs here: the skip cannot be shown")
    directory = _copy(classifier, tmp_path)
    manifest = _manifest(directory)
    engine = dict(manifest["artifacts"][0], target="trt", path="model.engine")
    shutil.copy(directory / manifest["artifacts"][0]["path"], directory / "model.engine")
    manifest["artifacts"].append(engine)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    code, _ = _check(capsys, directory, tmp_path / "out")
    assert code == 0
    rows = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]
    assert [r["status"] for r in rows] == ["pass", "skipped"]
    assert rows[1]["reason"] == reason


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts natively on macOS")
def test_a_simulated_package_is_judged_but_not_timed(
    digits_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("coremltools")
    directory = _export(tmp_path / "cm", digits_checkpoint, "--target", "coreml")
    code, _ = _check(capsys, directory, tmp_path / "out")
    assert code == 0
    (row,) = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]
    assert row["status"] == "pass" and row["parity"]["status"] == "simulated"
    # The simulator's speed says nothing of an Apple device: no latency, and the reason.
    assert row["timing_skipped"].startswith("simulated coreml (") and "timing" not in row


# --- bad input: one line naming the file, the exit code, no report written over ---------------


def _break_no_manifest(d: Path) -> str:
    (d / "manifest.json").unlink()
    return "manifest.json"


def _break_missing_artifact(d: Path) -> str:
    name = _manifest(d)["artifacts"][0]["path"]
    (d / name).unlink()
    return name


def _break_outside(d: Path) -> str:
    m = _manifest(d)
    m["artifacts"][0]["path"] = "../elsewhere.onnx"
    (d / "manifest.json").write_text(json.dumps(m))
    return "../elsewhere.onnx"


def _break_changed_artifact(d: Path) -> str:
    name = _manifest(d)["artifacts"][0]["path"]
    with open(d / name, "ab") as fh:
        fh.write(b"\0")
    return name


def _break_missing_reference(d: Path) -> str:
    name = _manifest(d)["artifacts"][0]["reference"]["path"]
    (d / name).unlink()
    return name


def _break_altered_reference(d: Path) -> str:
    name = _manifest(d)["artifacts"][0]["reference"]["path"]
    data = bytearray((d / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / name).write_bytes(bytes(data))
    return name


@pytest.mark.parametrize(
    ("breaks", "code"),
    [
        (_break_no_manifest, 2),
        (_break_missing_artifact, 2),
        (_break_outside, 2),
        (_break_changed_artifact, 1),
        (_break_missing_reference, 2),
        (_break_altered_reference, 1),
    ],
)
def test_bad_export_is_one_line_and_keeps_the_earlier_report(
    breaks, code: int, classifier: Path, tmp_path: Path, capsys
) -> None:
    directory = _copy(classifier, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("earlier")
    name = breaks(directory)
    got, err = _check(capsys, directory, out)
    assert got == code
    assert len(err.strip().splitlines()) == 1 and name in err
    assert (out / "report.json").read_text() == "earlier" and sorted(out.iterdir()) == [
        out / "report.json"
    ]


# --- the fleet report --------------------------------------------------------------------------


def test_fleet_marks_a_device_whose_verdict_differs(
    classifier: Path, tmp_path: Path, capsys
) -> None:
    code, _ = _check(capsys, classifier, tmp_path / "a")
    assert code == 0
    here = json.loads((tmp_path / "a" / "report.json").read_text())
    # A second device where the artifact failed (as U8S8 int8 did on an AVX2 CPU).
    other = json.loads(json.dumps(here))
    other["environment"]["host"] = "avx2-box"
    other["artifacts"][0]["status"] = "fail"
    (tmp_path / "b.json").write_text(json.dumps(other))
    table = fleet_table([("a", here), ("b", other)])
    (row,) = table["artifacts"]
    flags = [row["devices"][d]["differs_from_gate"] for d in table["devices"]]
    assert flags == [False, True]
    argv = ["compare", str(tmp_path / "a" / "report.json"), str(tmp_path / "b.json")]
    assert cli.main([*argv, "--output", str(tmp_path / "fleet")]) == 0
    markdown = (tmp_path / "fleet" / "fleet.md").read_text()
    assert "fail **differs**" in markdown and "avx2-box" in markdown
    written = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    assert written["devices"] == table["devices"]
    assert [d["status"] for d in written["artifacts"][0]["devices"].values()] == ["pass", "fail"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "fleet" / "fleet.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_a_latency_report(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"environment": {}, "results": []}))
    assert cli.main(["compare", str(tmp_path / "r.json")]) == 2
    assert "--compare REPORT" in capsys.readouterr().err


# --- no torch, no Pillow on the device path -----------------------------------------------------


def test_check_and_artifacts_bench_import_neither_torch_nor_pillow(
    classifier: Path, tmp_path: Path
) -> None:
    """In a fresh interpreter where importing torch, Pillow (or matplotlib, which needs
    Pillow) raises, both device commands still work."""
    script = f"""
import sys
for name in ("torch", "PIL", "matplotlib"):
    sys.modules[name] = None
from partialnet.bench.cli import main
codes = [
    main(["check", {str(classifier)!r}, "--output", {str(tmp_path / "c")!r}, "--iterations", "2"]),
    main(["--artifacts", {str(classifier)!r}, "--output", {str(tmp_path / "l")!r},
          "--iterations", "2", "--peak-gemm", "0"]),
]
sys.exit(max(codes))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "c" / "report.json").is_file() and (tmp_path / "l" / "report.json").is_file()


# --- a venv without torch: numpy, onnxruntime and the project, as on a device ----------------

DEVICE_DISTRIBUTIONS = ("numpy", "onnxruntime", "flatbuffers", "packaging", "protobuf")


def _link_distribution(dist: str, site: Path) -> None:
    """Symlink a distribution's top-level entries (package, .libs, dist-info) into ``site``:
    the same files pip would install, without the network."""
    from importlib import metadata

    files = metadata.files(dist) or []
    located = metadata.distribution(dist).locate_file("")
    tops = {f.parts[0] for f in files if f.parts and f.parts[0] not in ("..", "__pycache__")}
    for top in tops:
        source = Path(located) / top
        if source.exists() and not (site / top).exists():
            (site / top).symlink_to(source)


def _install_project(site: Path) -> None:
    """The project laid out as its wheel installs it (pyproject's package-dir mapping)."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(mapping["package-dir"].items()):  # parents before children
        shutil.copytree(root / folder, site / Path(*package.split(".")), ignore=skip)


@pytest.mark.device_venv
def test_device_venv_without_torch_runs_the_check(classifier: Path, tmp_path: Path) -> None:
    venv, site = tmp_path / "venv", tmp_path / "site"
    site.mkdir()
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    for dist in DEVICE_DISTRIBUTIONS:
        _link_distribution(dist, site)
    _install_project(site)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "device.pth").write_text(f"{site}\n")
    script = f"""
import importlib.util, sys
assert importlib.util.find_spec("torch") is None and importlib.util.find_spec("PIL") is None
from partialnet.bench.cli import main
codes = [
    main(["check", {str(classifier)!r}, "--output", {str(tmp_path / "c")!r}, "--iterations", "2"]),
    main(["--artifacts", {str(classifier)!r}, "--output", {str(tmp_path / "l")!r},
          "--iterations", "2", "--peak-gemm", "0"]),
]
assert "torch" not in sys.modules and "PIL" not in sys.modules, "imported on the device path"
sys.exit(max(codes))
"""
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    (row,) = report["artifacts"]
    assert row["status"] == "pass" and row["same_as_gate"] is True
    assert report["environment"]["packages"]["torch"] is None


def test_reexport_into_the_same_directory_keeps_every_record_checkable(
    classifier: Path, digits_checkpoint: Path, small_val: Path, tmp_path: Path
) -> None:
    """The same gate inputs give the same reference name: the earlier file is kept (its
    zip timestamps, and so its sha256, are the ones earlier records carry)."""
    from partialnet.bench.check.plan import plan

    directory = _copy(classifier, tmp_path)
    before = {p.name: p.read_bytes() for p in directory.glob("reference-*.npz")}
    _export(directory, digits_checkpoint, "--eval-data", str(small_val))
    after = {p.name: p.read_bytes() for p in directory.glob("reference-*.npz")}
    assert after == before
    _, items = plan(directory)
    assert len(items) == 1


def test_check_runs_an_auto_bf16_record_in_bf16(
    digits_checkpoint: Path, small_val: Path, tmp_path: Path, capsys
) -> None:
    """--precision auto may choose the fp32 IR executed in bf16 (record precision "bf16"):
    the check opens it in bf16 and judges it by the fp16/bf16 rule, as auto did."""
    pytest.importorskip("openvino")
    from partialnet.runtimes.registry import runtime_spec

    if "bf16" not in runtime_spec("openvino").native_precisions():
        pytest.skip("this CPU has no bf16 arithmetic for OpenVINO")
    directory = _export(
        tmp_path / "export", digits_checkpoint, "--eval-data", str(small_val)
    )  # ONNX first: the helper's target; OpenVINO next into the same directory
    from partialnet.export.cli.main import main as export_main

    argv = ["--checkpoint", str(digits_checkpoint), "--target", "openvino"]
    assert export_main([*argv, "--output", str(directory), "--eval-data", str(small_val)]) == 0
    manifest = _manifest(directory)
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["target"] == "openvino"]
    (entry,) = manifest["artifacts"]
    entry["precision"] = "bf16"  # what auto's selection writes for its bf16 candidate
    entry["details"]["execution_precision"] = "bf16"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    code, err = _check(capsys, directory, tmp_path / "out")
    assert code == 0, err
    (row,) = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]
    assert row["status"] == "pass" and row["computed_in"] == "bf16"


@pytest.fixture(scope="module")
def openvino_export(
    digits_checkpoint: Path, small_val: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    pytest.importorskip("openvino")
    from partialnet.export.cli.main import main as export_main

    out = tmp_path_factory.mktemp("ov")
    argv = ["--checkpoint", str(digits_checkpoint), "--target", "openvino", "--output", str(out)]
    assert export_main([*argv, "--eval-data", str(small_val)]) == 0
    return out


def _plain_default() -> str:
    """What OpenVINO executes in here when nothing asks (bf16 on this AVX512_BF16 machine),
    read from OpenVINO itself, in the report's words."""
    import openvino as ov

    name = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return {"f32": "fp32", "f16": "fp16"}.get(name, name)


def test_check_reports_what_a_plain_openvino_compile_executes_in(
    openvino_export: Path, tmp_path: Path, capsys
) -> None:
    """The fp32 IR is checked in fp32 (the runner sets INFERENCE_PRECISION_HINT=f32); the
    report also says what a plain compile_model executes in on this device, and, where that
    differs (bf16 on AVX512_BF16/AMX CPUs), that the check did not judge it."""
    code, err = _check(capsys, openvino_export, tmp_path / "out")
    assert code == 0, err
    (row,) = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]
    default = _plain_default()
    assert row["status"] == "pass" and row["computed_in"] == "fp32"  # kept as before
    assert row["execution_precision"] == {
        "checked_in": "fp32",
        "setting": "INFERENCE_PRECISION_HINT",
        "runner_hint": "f32",
        "plain_compile_default": default,
        "plain_compile_checked": default == "fp32",
    }
    assert row["runner"]["extra"]["default_precision"] == default
    md = (tmp_path / "out" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith(f"- {row['artifact']}: checked in"))
    assert "INFERENCE_PRECISION_HINT=f32" in line
    if default != "fp32":
        assert f"executes in {default}, which this check did not judge" in line, line


def test_an_ir_cannot_carry_its_execution_precision(openvino_export: Path, tmp_path) -> None:
    """Why the check reports the plain compile's precision instead of the IR fixing it:
    OpenVINO applies ``runtime_options`` from a model's rt_info at compile time (shown with
    KV_CACHE_PRECISION) but not INFERENCE_PRECISION_HINT. If this fails, OpenVINO now honours
    it: write it in the OpenVINO target (fp32 IR -> f32) and judge the plain compile."""
    import openvino as ov

    if _plain_default() == "fp32":
        pytest.skip("OpenVINO executes in f32 here by default: nothing to tell apart")
    (xml,) = [p for p in openvino_export.rglob("*.xml")]
    core = ov.Core()
    model = core.read_model(str(xml))
    model.set_rt_info("f32", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    model.set_rt_info("f16", ["runtime_options", "KV_CACHE_PRECISION"])
    saved = tmp_path / "with-runtime-options.xml"
    ov.save_model(model, str(saved), compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(saved), "CPU")  # what a plain user writes
    assert compiled.get_property("KV_CACHE_PRECISION") == ov.Type.f16  # the section is read
    assert compiled.get_property("INFERENCE_PRECISION_HINT") != ov.Type.f32
