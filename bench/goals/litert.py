"""The LiteRT goals, measured in one run on this machine and printed (issue 16).

    python -m partialnet.bench.goals.litert [--threads 2] [--iterations 50] [--rounds 3]
        [--variant t1] [--recipes conv,...] [--digits CKPT]

1. t1 at 224 px, batch 1: LiteRT fp32 vs ONNX Runtime fp32 on the same inference form
   (goal <= 0.9x); also the gates left as ``clamp`` (RELU_0_TO_1, outside XNNPACK) and
   LiteRT without XNNPACK, with each model's delegate partition count.
2. int8 / LiteRT fp32 for each int8 recipe in ``--recipes`` (goal <= 0.7 for the one the
   export uses), calibrated on scikit-image photo crops.
4. ``partialnet-export --variant t1 --target litert`` (random weights, with its gate) in its
   own process: wall time and peak RSS (goals: under 60 s and 2 GB).
3. With the trained digits checkpoint: each recipe's int8 top-1 vs fp32 on held-out digits
   and the int8 rule's figures (the export gate's ``compare``).

Random weights get randomized BatchNorm statistics (``goals.int8.random_model``). Each runner
is opened, measured and closed alone; the candidates alternate over ``--rounds`` rounds and
the best p50 of each is kept; ONNX Runtime runs with its default spinning. The ISA and load
are printed with the figures. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import partialnet
from partialnet.bench.environment import isa_summary
from partialnet.bench.goals.int8 import (
    DEFAULT_DIGITS,
    calibration_images,
    digits_images,
    load,
    random_model,
)
from partialnet.bench.goals.timing import best_p50
from partialnet.export import export
from partialnet.export.gate.parity import compare
from partialnet.export.options import Precision
from partialnet.export.targets.litert.convert import _NamedIO, convert_litert, export_litert
from partialnet.export.targets.litert.int8 import DEFAULT_RECIPE, RECIPES, quantize_litert
from partialnet.runtimes import open_runner


def _verdict(ratio: float, goal: float) -> str:
    return "met" if ratio <= goal else f"MISSED by {ratio / goal:.2f}x"


def _partitions(path: Path) -> int:
    with open_runner("litert", path, threads=1) as runner:
        return runner.info().extra["delegate_partitions"]


def _fp32(inference: torch.nn.Module, out: Path, clamp: bool = False) -> Path:
    """Our LiteRT fp32 (gates as relu6), or with ``clamp`` the inference form as it is."""
    path = out / ("fp32-clamp.tflite" if clamp else "fp32.tflite")
    if clamp:
        c, (h, w) = inference.cfg.in_chans, inference.input_size
        convert_litert(_NamedIO(inference, nhwc=False).eval(), torch.zeros(1, c, h, w), path)
    else:
        export_litert(
            inference, path, batch=1, precision="fp32", nhwc=False, metadata={}, scratch=out
        )
    return path


def _int8(
    fp32: Path, out: Path, calib: np.ndarray, recipes: list[str], statistics: str
) -> dict[str, Path]:
    paths = {}
    for name in recipes:
        started = time.perf_counter()
        paths[name] = out / f"int8-{name}.tflite"
        quantize_litert(
            fp32, paths[name], calib, nhwc=False, ops=RECIPES[name], statistics=statistics
        )
        print(f"   int8 {name}: quantized in {time.perf_counter() - started:.1f} s")
    return paths


def goals_speed(args: argparse.Namespace, tmp: Path) -> None:
    model = random_model(args.variant)
    inference = partialnet.reparameterize(model, (224, 224))
    manifest = export(model, targets="onnx", output_dir=tmp / "onnx", imgsz=224, verify=False)
    onnx = tmp / "onnx" / manifest.artifacts[0].path
    fp32, clamp = _fp32(inference, tmp), _fp32(inference, tmp, clamp=True)
    calib, source = calibration_images(args.calibration, 224, *_norm(model))
    print(f"{args.variant}: random weights, int8 calibration on {len(calib)} {source}")
    int8 = _int8(fp32, tmp, calib, args.recipes, args.statistics)
    candidates = {
        "onnxruntime fp32": ("onnxruntime", onnx),
        "litert fp32": ("litert", fp32),
        "litert fp32, gates as clamp": ("litert", clamp),
        **{f"litert int8 {name}": ("litert", path) for name, path in int8.items()},
    }
    p50 = best_p50(candidates, 1, args.threads, args.iterations, args.rounds)
    no_xnn = _no_xnnpack_p50(fp32, args)
    no_spin = _p50("onnxruntime", onnx, args, allow_spinning=False)
    print(f"1. {args.variant} 224 px batch 1, {args.threads} threads ({load()}):")
    ratio = p50["litert fp32"] / p50["onnxruntime fp32"]
    print(
        f"   litert fp32 {p50['litert fp32']:.2f} ms ({_partitions(fp32)} partition(s)) vs "
        f"onnxruntime fp32 {p50['onnxruntime fp32']:.2f} ms: {ratio:.2f}x "
        f"(goal <= 0.9x: {_verdict(ratio, 0.9)})"
    )
    print(
        f"   onnxruntime fp32 with its threads not spinning (kinder on a loaded machine): "
        f"{no_spin:.2f} ms: litert {p50['litert fp32'] / no_spin:.2f}x of it"
    )
    print(
        f"   gates as clamp: {p50['litert fp32, gates as clamp']:.2f} ms "
        f"({_partitions(clamp)} partitions); without XNNPACK {no_xnn:.2f} ms"
    )
    for name, path in int8.items():
        ratio = p50[f"litert int8 {name}"] / p50["litert fp32"]
        goal = f" (goal <= 0.7: {_verdict(ratio, 0.7)})" if name == DEFAULT_RECIPE else ""
        print(
            f"2. int8 {name:12} {p50[f'litert int8 {name}']:.2f} ms, "
            f"{_partitions(path)} partition(s): int8/fp32 {ratio:.2f}{goal}"
        )


def _no_xnnpack_p50(path: Path, args: argparse.Namespace) -> float:
    return _p50("litert", path, args, iterations=max(5, args.iterations // 5), xnnpack=False)


def _p50(
    runtime: str, path: Path, args: argparse.Namespace, iterations: int = 0, **options
) -> float:
    from partialnet.bench.goals.timing import p50_ms

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with open_runner(runtime, path, threads=args.threads, **options) as runner:
        return p50_ms(lambda: runner.infer(x), iterations or args.iterations)


def goal_export(args: argparse.Namespace, tmp: Path) -> None:
    from partialnet.bench.perf.export_perf import time_export

    seconds, peak_mb, code = time_export(args.variant, tmp / "export", target="litert")
    status = "" if code == 0 else f" (export exited {code})"
    print(
        f"4. partialnet-export --variant {args.variant} --target litert: {seconds:.1f} s "
        f"(goal < 60: {'met' if seconds < 60 else 'MISSED'}), peak RSS {peak_mb:.0f} MiB "
        f"(goal < 2048: {'met' if peak_mb < 2048 else 'MISSED'}){status} ({load()})"
    )


def goal_digits(args: argparse.Namespace, tmp: Path) -> None:
    model = partialnet.load_checkpoint(args.digits).eval()
    images, labels = digits_images(model)
    calib, held, held_labels = images[:128], images[512:], labels[512:]
    inference = partialnet.reparameterize(model, model.cfg.meta.input_size)
    out = tmp / "digits"
    out.mkdir()
    fp32 = _fp32(inference, out)
    int8 = _int8(fp32, out, calib, args.recipes, args.statistics)
    ref = _predict(fp32, held, args.threads)
    ref_acc = float((ref.argmax(1) == held_labels).mean())
    for name, path in int8.items():
        got = _predict(path, held, args.threads)
        acc = float((got.argmax(1) == held_labels).mean())
        labelled = compare(ref, got, Precision.INT8, labels=held_labels)
        # Without labels the gate asks agreement >= 97% and every image's cosine >= 0.98.
        unlabelled = compare(ref, got, Precision.INT8, inputs="held-out digits")
        print(
            f"3. digits int8 {name:12} top-1 {acc:.2%} vs fp32 {ref_acc:.2%} "
            f"({(acc - ref_acc) * 100:+.2f} points, rule with labels "
            f"{'pass' if labelled.passed else 'FAIL'}); without labels: {unlabelled.summary()}"
        )


def _predict(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    with open_runner("litert", path, threads=threads) as runner:
        return np.concatenate([runner.infer(images[i : i + 1]) for i in range(len(images))])


def _norm(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return model.cfg.meta.mean, model.cfg.meta.std


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.goals.litert")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", default="t1")
    parser.add_argument("--calibration", type=int, default=16, help="calibration images")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"of {', '.join(RECIPES)}")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument(
        "--statistics", default="minmax", choices=("minmax", "moving-average"), help="calibration"
    )
    args = parser.parse_args(argv)
    args.recipes = [r for r in args.recipes.split(",") if r]
    print(f"CPU: {isa_summary()}; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            goals_speed(args, Path(tmp))
        if not args.skip_export:
            goal_export(args, Path(tmp))
        if args.digits.is_file():
            goal_digits(args, Path(tmp))
    print("Shared machines distort absolute figures: re-run on a quiet one for the README.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
