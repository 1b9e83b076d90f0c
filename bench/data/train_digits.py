"""Train PartialNet t0 on scikit-learn's digits at 64 px: a small real, trained model.

    python -m partialnet.bench.data.train_digits --out DIR

Writes DIR/digits/{train,val} (ImageFolder PNGs, see ``datasets.write_digits_folders``) and
DIR/digits_t0_64.ckpt in the authors' Lightning layout (``state_dict`` with ``model.``
keys, ``hyper_parameters`` with their argument names, ``image_size`` 64 and
``test_crop_ratio``), then prints the val top-1 and the training time.

The images go through ``partialnet.preprocess`` with the checkpoint's own metadata, so
training, evaluation and every exported artifact see the same transform. Seeded: the
split, the initialization and the batch order are fixed (bit-identical results need the
same torch build and CPU ISA).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import partialnet
from partialnet.bench.data.datasets import DIGITS_CLASSES, DIGITS_SIZE, write_digits_folders
from partialnet.config import ModelMeta, PartialNetConfig
from partialnet.images import labelled_folder
from partialnet.transform import preprocess_batch

CHECKPOINT_NAME = "digits_t0_64.ckpt"
CROP_PCT = 0.875  # resize 64 -> 73, centre crop 64: cuts the frame around the digit
# The Lightning release whose checkpoint layout this follows; Lightning migrates older
# checkpoints by this field, so it names a current one.
LIGHTNING_VERSION = "2.5.0"


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    # Random translation of up to this many pixels: handwriting is not centred the same way
    # twice, and 1,438 images overfit a 2.2M-parameter net without it.
    max_shift: int = 4
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    val_top1: float
    val_images: int
    train_images: int
    seconds: float
    cpu_seconds: float  # summed over threads: comparable across loaded and idle machines


def digits_meta(crop_pct: float = CROP_PCT) -> ModelMeta:
    size = (DIGITS_SIZE, DIGITS_SIZE)
    return ModelMeta(input_size=size, crop_pct=crop_pct, num_classes=len(DIGITS_CLASSES))


def _tensors(folder: Path, meta: ModelMeta) -> tuple[torch.Tensor, torch.Tensor]:
    data = labelled_folder(folder, len(DIGITS_CLASSES))
    x = torch.from_numpy(preprocess_batch(data.paths, meta))
    return x, torch.tensor(data.labels, dtype=torch.long)


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> float:
    """Fraction of ``x`` whose arg-max logit is the label, in eval mode."""
    model.eval()
    hits = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return hits / len(x)


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    # Linear warmup, then cosine to zero: the authors' schedule family, shortened.
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _shifted(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by a random (dy, dx) in [-max_shift, max_shift], edges replicated."""
    if max_shift == 0:
        return x
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack(
        [p[:, dy : dy + h, dx : dx + w] for p, (dy, dx) in zip(padded, offsets, strict=True)]
    )


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings
) -> tuple[int, int]:
    """AdamW with warmup + cosine, seeded batch order; returns (epochs, optimizer steps)."""
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    per_epoch = math.ceil(len(x) / settings.batch_size)
    total, warmup = settings.epochs * per_epoch, settings.warmup_epochs * per_epoch
    step = 0
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), settings.batch_size):
            idx = order[i : i + settings.batch_size]
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, warmup, settings.lr)
            loss = loss_fn(model(_shifted(x[idx], settings.max_shift, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return settings.epochs, step


def lightning_hparams(
    cfg: PartialNetConfig, meta: ModelMeta, settings: TrainSettings
) -> dict[str, Any]:
    """The authors' training-cfg names for this run (what ``load_checkpoint`` reads)."""
    return {
        "dataset_name": "sklearn_digits",
        "image_size": meta.input_size[0],
        "test_crop_ratio": meta.crop_pct,
        "num_classes": cfg.num_classes,
        "model_name": "partialnet",
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "mlp_ratio": cfg.mlp_ratio,
        "feature_dim": cfg.feature_dim,
        "patch_size": cfg.patch_size,
        "patch_stride": cfg.patch_stride,
        "patch_size2": cfg.merge_size,
        "patch_stride2": cfg.merge_stride,
        "layer_scale_init_value": 0,
        "drop_path_rate": cfg.drop_path_rate,
        "norm_layer": "BN",
        "act_layer": cfg.act.upper(),
        "n_div": cfg.n_div,
        "auto_div": cfg.auto_div,
        "use_channel_attn": cfg.use_channel_attn,
        "use_spatial_attn": cfg.use_spatial_attn,
        "patnet_t0": cfg.patnet_t0,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "opt": "adamw",
        "lr": settings.lr,
        "weight_decay": settings.weight_decay,
        "sched": "cosine",
        "warmup_epochs": settings.warmup_epochs,
        "smoothing": settings.label_smoothing,
        "seed": settings.seed,
    }


def save_lightning_checkpoint(
    model: nn.Module, path: Path, hparams: dict[str, Any], epoch: int, global_step: int
) -> None:
    """The authors' Lightning layout, fp32, without optimizer state (not needed to deploy)."""
    state = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": hparams,
            "epoch": epoch,
            "global_step": global_step,
            "pytorch-lightning_version": LIGHTNING_VERSION,
        },
        path,
    )


def train_digits(out_dir: Path, settings: TrainSettings | None = None) -> TrainResult:
    """Write the digits folders under ``out_dir/digits``, train t0, save and re-check it."""
    settings = settings or TrainSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_dir, val_dir = write_digits_folders(out_dir / "digits", seed=settings.seed)
    meta = digits_meta()
    x_train, y_train = _tensors(train_dir, meta)
    x_val, y_val = _tensors(val_dir, meta)

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model = partialnet.create_model("t0", num_classes=len(DIGITS_CLASSES))
    start, cpu_start = time.perf_counter(), time.process_time()
    epochs, steps = train(model, x_train, y_train, settings)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    path = out_dir / CHECKPOINT_NAME
    hparams = lightning_hparams(model.cfg, meta, settings)
    save_lightning_checkpoint(model, path, hparams, epochs - 1, steps)
    # Score the model as a user gets it: read back from the file, metadata from its hparams.
    loaded = partialnet.load_checkpoint(path)
    assert loaded.cfg.meta == meta, (loaded.cfg.meta, meta)
    x_check, _ = _tensors(val_dir, loaded)
    accuracy = top1(loaded, x_check, y_val)
    return TrainResult(path, accuracy, len(x_val), len(x_train), seconds, cpu_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.data.train_digits")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--threads", type=int, default=TrainSettings.threads)
    args = parser.parse_args(argv)
    settings = TrainSettings(epochs=args.epochs, seed=args.seed, threads=args.threads)
    result = train_digits(args.out, settings)
    size_mb = result.checkpoint.stat().st_size / 2**20
    print(
        f"trained t0 on {result.train_images} digits in {result.seconds:.0f} s wall, "
        f"{result.cpu_seconds:.0f} s CPU ({settings.epochs} epochs, {settings.threads} "
        f"threads); val top-1 "
        f"{result.val_top1:.2%} on {result.val_images} images; "
        f"{result.checkpoint} ({size_mb:.1f} MiB)"
    )
    return 0 if np.isfinite(result.val_top1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
