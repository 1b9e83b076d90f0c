"""The INT8 and CPU-runtime goals, measured in one run on this machine and printed.

    python -m partialnet.bench.goals.int8 [--threads 2] [--iterations 50] [--rounds 3]
        [--variants t1] [--digits CKPT] [--opset 18] [--profile]
        [--emulate-cpu QEMU_CPU] [--openvino-max-isa avx2] [--skip-speed]

1. t1, 224 px, batch 1: int8 / fp32 latency on the same runtime (goals: OpenVINO <= 0.5,
   ONNX Runtime <= 0.7), for every Q/DQ flavour on ONNX Runtime, with the quantizers' time.
2. ONNX Runtime fp32 (its default thread spinning) vs OpenVINO fp32 (goal <= 1.1x).
3. Our inference form vs the eager model exported directly, per runtime (goal <= 1.0x).
4. With a trained digits checkpoint (``--digits``, default tests/fixtures/digits_t0_64.ckpt
   when present): int8 top-1 vs fp32 on both runtimes (goal: within 0.5 point).
5. With ``--emulate-arm cortex-a72,max``: the digits int8 ONNX export checked by
   ``partialnet-bench check`` in an emulated aarch64 Python per core (ONNX Runtime's ARM
   kernels, without and with dot product; partialnet.bench.goals.onnxruntime.int8_arm).

Random-weight models get randomized BatchNorm statistics first: with PyTorch's identity
initialization every folded conv bias is zero and the exporter drops it, a graph no trained
model has. Calibration uses crops of scikit-image's photos (noise where it is not
installed). Each runner is opened, measured and closed alone (one runtime at a time); compared
sides alternate over ``--rounds`` rounds and the best p50 of each is kept. The CPU's ISA and
the load average are printed with the figures: on a shared machine re-run them when it is
quiet. Nothing here is a test. ``--profile`` adds ONNX Runtime's own per-op-type kernel
time (``enable_profiling``) of the fp32 and int8 graphs.

``--openvino-max-isa avx2`` runs OpenVINO's part again (t1 speed and the digits' accuracy)
in a subprocess with ``ONEDNN_MAX_CPU_ISA=AVX2`` (``openvino_isa``): AVX2 kernels without
VNNI, timed on this core, printed with the kernels each IR got (the proof) and quoted as
"AVX2 kernels on an AVX-512 core". Goal there: OpenVINO int8/fp32 <= 0.6. ONNX Runtime has
no such cap (MLAS picks its kernels by CPUID): its AVX2 outputs come from ``--emulate-cpu``
(qemu), its AVX2 speed stays unmeasured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import partialnet
from partialnet.bench.goals.onnxruntime import emulated
from partialnet.bench.goals.openvino import isa as openvino_isa
from partialnet.bench.goals.timing import best_p50
from partialnet.bench.perf.baseline import export_eager_onnx
from partialnet.export import export
from partialnet.export.gate.parity import compare
from partialnet.export.options import Precision
from partialnet.export.targets.onnx.int8 import QdqFlavour, quantize_onnx
from partialnet.export.targets.openvino.int8 import FAST_BIAS_CORRECTION, quantize_openvino
from partialnet.machine import cpu_isa, cpu_model, isa_summary
from partialnet.runtimes import open_runner

DEFAULT_DIGITS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "digits_t0_64.ckpt"
CALIBRATION_IMAGES = 32
# OpenVINO int8/fp32 latency goals (t1, batch 1) by the kernels' ISA: issue 14.
OPENVINO_GOAL = {"native": 0.5, "AVX2": 0.6}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


@torch.no_grad()
def random_model(variant: str, seed: int = 0) -> torch.nn.Module:
    """A seeded random-weight model with non-trivial BatchNorm statistics and affines."""
    torch.manual_seed(seed)
    model = partialnet.create_model(variant)
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            for t, lo, hi in (
                (mod.running_mean, -0.5, 0.5),
                (mod.running_var, 0.5, 2.0),
                (mod.weight, 0.5, 1.5),
                (mod.bias, -0.5, 0.5),
            ):
                t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


def calibration_images(n: int, size: int, mean, std, seed: int = 0) -> tuple[np.ndarray, str]:
    """Random crops of scikit-image's colour photos, normalized; noise when it is missing."""
    try:
        from partialnet.bench.data.datasets import photo_crops

        crops = photo_crops(n, size, seed)
    except ImportError:
        noise = np.random.default_rng(seed).standard_normal((n, 3, size, size))
        return noise.astype(np.float32), "noise"
    m = np.asarray(mean, np.float32)[None, :, None, None]
    s = np.asarray(std, np.float32)[None, :, None, None]
    return ((crops - m) / s).astype(np.float32), "scikit-image photo crops"


def build(
    model: torch.nn.Module, out: Path, size: int, calib: np.ndarray, opset: int = 18
) -> dict[str, Path]:
    """fp32 ONNX + IR (our inference form), the eager direct export, every Q/DQ flavour and
    the NNCF IR; prints how long each quantizer took."""
    manifest = export(
        model, targets="onnx,openvino", output_dir=out, imgsz=size, verify=False, opset=opset
    )
    paths = {a.target: out / a.path for a in manifest.artifacts}
    paths["eager"] = export_eager_onnx(model, out / "eager.onnx", (size, size))
    timings = []
    for flavour in QdqFlavour:
        started = time.perf_counter()
        paths[f"qdq-{flavour.value}"] = out / f"int8-{flavour.value}.onnx"
        quantize_onnx(paths["onnx"], paths[f"qdq-{flavour.value}"], [calib], flavour=flavour)
        timings.append(f"Q/DQ {flavour.value} {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    paths["nncf"] = out / "int8-nncf.xml"
    quantize_openvino(paths["openvino"], paths["nncf"], [calib])
    timings.append(
        f"NNCF (fast_bias_correction={FAST_BIAS_CORRECTION}) {time.perf_counter() - started:.1f} s"
    )
    print(f"   quantizers on {len(calib)} images: " + ", ".join(timings))
    return paths


def _verdict(ratio: float, goal: float) -> str:
    return "met" if ratio <= goal else f"MISSED by {ratio / goal:.2f}x"


def _flavour_label(flavour: QdqFlavour) -> str:
    return f"int8 ({flavour.value} flavour)"


def goal_int8_speed(paths: dict[str, Path], args: argparse.Namespace, variant: str) -> None:
    ort = best_p50(
        {
            "fp32": ("onnxruntime", paths["onnx"]),
            **{_flavour_label(f): ("onnxruntime", paths[f"qdq-{f.value}"]) for f in QdqFlavour},
        },
        1,
        args.threads,
        args.iterations,
        args.rounds,
    )
    ov = best_p50(
        {"fp32": ("openvino", paths["openvino"]), "int8": ("openvino", paths["nncf"])},
        1,
        args.threads,
        args.iterations,
        args.rounds,
    )
    print(f"1. {variant} 224 px batch 1, {args.threads} threads ({load()}):")
    ratio = ov["int8"] / ov["fp32"]
    goal = OPENVINO_GOAL["native"]
    print(
        f"   openvino     fp32 {ov['fp32']:.2f} ms, NNCF int8 {ov['int8']:.2f} ms: "
        f"int8/fp32 {ratio:.2f} (goal <= {goal}: {_verdict(ratio, goal)}) "
        f"[{isa_summary()} kernels, native]"
    )
    if args.openvino_max_isa:
        capped_speed(paths, args)
    for name in map(_flavour_label, QdqFlavour):
        ratio = ort[name] / ort["fp32"]
        print(
            f"   onnxruntime  fp32 {ort['fp32']:.2f} ms, {name} {ort[name]:.2f} ms: "
            f"int8/fp32 {ratio:.2f} (goal <= 0.7: {_verdict(ratio, 0.7)})"
        )
    print("   onnxruntime runs with its default thread spinning (on), one runtime at a time")


def capped_speed(paths: dict[str, Path], args: argparse.Namespace) -> None:
    """OpenVINO fp32 and int8 timed again on capped kernels (a subprocess), with the kernels
    each IR actually got, so the figure cannot silently be a native one."""
    isa = args.openvino_max_isa
    run = openvino_isa.run_capped(
        isa,
        [paths["openvino"], paths["nncf"]],
        threads=args.threads,
        iterations=args.iterations,
        rounds=args.rounds,
    )
    assert run.p50_ms is not None  # asked for with iterations > 0
    fp32, int8 = run.p50_ms
    ratio, goal = int8 / fp32, OPENVINO_GOAL.get(isa)
    verdict = f"goal <= {goal}: {_verdict(ratio, goal)}" if goal else "no goal for this ISA"
    print(
        f"   openvino     fp32 {fp32:.2f} ms, NNCF int8 {int8:.2f} ms: int8/fp32 {ratio:.2f} "
        f"({verdict}) [{openvino_isa.isa_line(isa)}; {load()}]"
    )
    for name, index in (("fp32", 0), ("int8", 1)):
        print(f"     {name} kernels ({run.precisions[index]}): {run.describe(index)}")
    print(
        f"   onnxruntime  {isa} speed: unmeasured (MLAS picks its kernels by CPUID, there is no "
        "cap to set; qemu's timing means nothing)"
    )


def goal_runtimes(paths: dict[str, Path], args: argparse.Namespace, variant: str) -> None:
    both = best_p50(
        {
            "onnxruntime": ("onnxruntime", paths["onnx"]),
            "openvino": ("openvino", paths["openvino"]),
        },
        1,
        args.threads,
        args.iterations,
        args.rounds,
    )
    ratio = both["onnxruntime"] / both["openvino"]
    print(
        f"2. {variant} fp32: onnxruntime {both['onnxruntime']:.2f} ms vs openvino "
        f"{both['openvino']:.2f} ms: {ratio:.2f}x (goal <= 1.1x: {_verdict(ratio, 1.1)}) ({load()})"
    )
    for runtime, ours in (("onnxruntime", paths["onnx"]), ("openvino", paths["openvino"])):
        t = best_p50(
            {"ours": (runtime, ours), "direct": (runtime, paths["eager"])},
            1,
            args.threads,
            args.iterations,
            args.rounds,
        )
        ratio = t["ours"] / t["direct"]
        print(
            f"3. {variant} {runtime:11} inference form {t['ours']:.2f} ms vs eager exported "
            f"directly {t['direct']:.2f} ms: {ratio:.2f}x (goal <= 1.0x: {_verdict(ratio, 1.0)})"
        )


def ort_profile(path: Path, threads: int, runs: int = 50, top: int = 12) -> None:
    """ONNX Runtime's kernel time per op type (after its graph optimizations), per run."""
    import collections
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    micros: collections.Counter[str] = collections.Counter()
    nodes: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    total = sum(micros.values()) / runs / 1e3
    print(f"   profile {path.name}: {total:.2f} ms kernel time per run ({threads} threads)")
    for op, us in micros.most_common(top):
        print(f"     {op:24} {us / runs / 1e3:7.3f} ms  {nodes[op] // runs:3d} nodes")


def digits_images(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as the model sees them: 8x8 grey upscaled (bicubic) to the
    model's resize side, centre-cropped, RGB, normalized with its mean/std."""
    from PIL import Image
    from sklearn.datasets import load_digits

    meta = model.cfg.meta
    size = meta.input_size[0]
    side = int(size / meta.crop_pct)
    top = round((side - size) / 2)
    digits = load_digits()
    out = []
    for image in digits.images:
        pil = Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize((side, side), 3)
        a = np.asarray(pil, np.float32)[top : top + size, top : top + size] / 255.0
        out.append(np.repeat(a[None], 3, axis=0))
    m = np.asarray(meta.mean, np.float32)[None, :, None, None]
    s = np.asarray(meta.std, np.float32)[None, :, None, None]
    return ((np.stack(out) - m) / s).astype(np.float32), digits.target


def _predict(runtime: str, path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    with open_runner(runtime, path, threads=threads) as runner:
        return np.concatenate([runner.infer(images[i : i + 1]) for i in range(len(images))])


def goal_digits(
    checkpoint: Path,
    tmp: Path,
    threads: int,
    opset: int = 18,
    emulate_cpu: str | None = None,
    emulated_images: int = 300,
    openvino_max_isa: str | None = None,
) -> None:
    """int8 vs fp32 top-1 on held-out digits per artifact; with ``emulate_cpu``, the ONNX
    Runtime artifacts again inside that emulated CPU (what an AVX2 machine computes), beside
    the uint8-activation graph with full 8-bit weights that saturates there."""
    model = partialnet.load_checkpoint(checkpoint).eval()
    images, labels = digits_images(model)
    # Calibration on the first images, accuracy on the rest (never calibrated on).
    calib, held, held_labels = images[:128], images[512:], labels[512:]
    paths = build(model, tmp / "digits", model.cfg.meta.input_size[0], calib, opset)
    paths["qdq-onnxruntime-8bit"] = tmp / "digits" / "int8-onnxruntime-8bit.onnx"
    quantize_onnx(paths["onnx"], paths["qdq-onnxruntime-8bit"], [calib], reduce_range=False)
    others = [f for f in QdqFlavour if f is not QdqFlavour.ONNXRUNTIME]
    pairs = (
        ("onnxruntime", "onnx", "qdq-onnxruntime"),
        ("onnxruntime", "onnx", "qdq-onnxruntime-8bit"),
        *(("onnxruntime", "onnx", f"qdq-{f.value}") for f in others),
        ("openvino", "openvino", "nncf"),
    )
    for runtime, fp32_key, int8_key in pairs:
        ref = _predict(runtime, paths[fp32_key], held, threads)
        out = _predict(runtime, paths[int8_key], held, threads)
        _print_digits(f"{runtime} ({isa_summary()})", int8_key, ref, out, held_labels)
    if openvino_max_isa:
        isa = openvino_max_isa
        run = openvino_isa.run_capped(
            isa, [paths["openvino"], paths["nncf"]], held, threads=threads
        )
        assert run.outputs is not None  # asked for with images
        ref, out = run.outputs
        _print_digits(f"openvino ({openvino_isa.isa_line(isa)})", "nncf", ref, out, held_labels)
        print(f"     int8 kernels: {run.describe(1)}")
    if emulate_cpu is None:
        return
    few, few_labels = held[:emulated_images], held_labels[:emulated_images]
    int8_keys = [key for runtime, _, key in pairs if runtime == "onnxruntime"]
    models = [paths["onnx"], *(paths[key] for key in int8_keys)]
    ref, *outs = emulated.onnx_outputs_on(emulate_cpu, models, few)
    for int8_key, out in zip(int8_keys, outs, strict=True):
        _print_digits(f"onnxruntime (qemu {emulate_cpu})", int8_key, ref, out, few_labels)


def _print_digits(
    where: str, int8_key: str, ref: np.ndarray, out: np.ndarray, labels: np.ndarray
) -> None:
    ref_acc = float((ref.argmax(1) == labels).mean())
    out_acc = float((out.argmax(1) == labels).mean())
    drop = (ref_acc - out_acc) * 100
    verdict = "met" if drop <= 0.5 else f"MISSED by {drop - 0.5:.2f} points"
    result = compare(ref, out, Precision.INT8, inputs="held-out digits")
    print(
        f"4. digits {where}: {int8_key:20} top-1 fp32 {ref_acc:.2%} int8 {out_acc:.2%} "
        f"(drop {drop:+.2f} points, goal <= 0.5: {verdict}); {result.summary()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.goals.int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="t1", help="comma list, e.g. t0,t1")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (20: a Gelu op)")
    parser.add_argument("--profile", action="store_true", help="ONNX Runtime per-op profile")
    parser.add_argument(
        "--emulate-cpu",
        metavar="QEMU_CPU",
        help=f"also run the digits' ONNX Runtime artifacts in qemu-x86_64 -cpu QEMU_CPU (e.g. "
        f"{emulated.AVX2_CPU}: AVX2 without VNNI); outputs only, its speed means nothing",
    )
    parser.add_argument("--emulated-images", type=int, default=300)
    parser.add_argument(
        "--openvino-max-isa",
        type=str.upper,
        choices=("AVX2",),
        help="also run OpenVINO's part (speed and digits accuracy) with ONEDNN_MAX_CPU_ISA set "
        "to this (AVX2: AVX2 kernels without VNNI, timed on this core)",
    )
    parser.add_argument(
        "--emulate-arm",
        metavar="QEMU_CPUS",
        help="also export the digits int8 ONNX and check it in an emulated aarch64 Python on "
        "each qemu-aarch64 -cpu listed (e.g. cortex-a72,max; "
        "partialnet.bench.goals.onnxruntime.int8_arm)",
    )
    parser.add_argument("--skip-speed", action="store_true", help="only the digits accuracy")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()} ({isa_summary()}: {', '.join(cpu_isa())}); {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in [] if args.skip_speed else args.variants.split(","):
            model = random_model(variant)
            calib, source = calibration_images(CALIBRATION_IMAGES, 224, *_norm(model))
            print(f"{variant}: random weights, opset {args.opset}, calibration on {source}")
            paths = build(model, Path(tmp) / variant, 224, calib, args.opset)
            if args.profile:
                for key in ("onnx", "qdq-onnxruntime"):
                    ort_profile(paths[key], args.threads)
            goal_int8_speed(paths, args, variant)
            goal_runtimes(paths, args, variant)
        if args.digits.is_file():
            goal_digits(
                args.digits,
                Path(tmp),
                args.threads,
                args.opset,
                args.emulate_cpu,
                args.emulated_images,
                args.openvino_max_isa,
            )
        else:
            print(f"4. digits: skipped, no trained checkpoint at {args.digits} (--digits)")
        if args.emulate_arm and args.digits.is_file():
            from partialnet.bench.goals.onnxruntime import emulated_arm, int8_arm

            print("5. the digits int8 ONNX checked on emulated ARM cores (goals.int8_arm):")
            try:
                int8_arm.run(args.digits, args.emulate_arm.split(","), Path(tmp) / "arm")
            except emulated_arm.EmulationUnavailable as exc:
                print(f"emulated ARM unavailable: {exc}")
    print("Shared machines distort absolute figures: re-run on a quiet one for the README.")
    return 0


def _norm(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return model.cfg.meta.mean, model.cfg.meta.std


if __name__ == "__main__":
    raise SystemExit(main())
