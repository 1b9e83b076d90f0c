"""The trained digits model committed as a fixture, and the Lightning layout it is saved in."""

from __future__ import annotations

from pathlib import Path

import torch

import partialnet
from partialnet.bench.data.train_digits import (
    TrainSettings,
    digits_meta,
    lightning_hparams,
    save_lightning_checkpoint,
    top1,
)
from partialnet.images import labelled_folder
from partialnet.transform import preprocess_batch


def test_fixture_is_the_trained_model(
    digits_checkpoint: Path, digits_folders: tuple[Path, Path]
) -> None:
    model = partialnet.load_checkpoint(digits_checkpoint)
    meta = model.cfg.meta
    assert meta.input_size == (64, 64) and meta.crop_pct == 0.875 and meta.num_classes == 10
    assert model.cfg.name == "t0" and model.checkpoint_info["format"] == "lightning"
    val = labelled_folder(digits_folders[1], num_classes=meta.num_classes)
    x = torch.from_numpy(preprocess_batch(val.paths, model))
    y = torch.tensor(val.labels)
    # A random-weight 10-class net scores about 10%; the trained one at least 98% on the
    # 359 val digits it never saw (at most 7 mistakes).
    assert top1(model, x, y) >= 0.98


def test_lightning_layout_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = partialnet.create_model("t0", num_classes=10).eval()
    hparams = lightning_hparams(model.cfg, digits_meta(), TrainSettings())
    path = tmp_path / "t0.ckpt"
    save_lightning_checkpoint(model, path, hparams, epoch=3, global_step=40)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {
        "state_dict",
        "hyper_parameters",
        "epoch",
        "global_step",
        "pytorch-lightning_version",
    }
    assert all(k.startswith("model.") for k in raw["state_dict"])
    loaded = partialnet.load_checkpoint(path)
    assert loaded.cfg.meta == digits_meta()
    assert loaded.checkpoint_info["epoch"] == 3 and loaded.checkpoint_info["global_step"] == 40
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # The same weights in the same eval-mode graph: bit-identical logits.
        assert torch.equal(loaded(x), model(x))
