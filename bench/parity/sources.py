"""Where the parity matrix's models and artifacts come from: variants (seeded random
weights), checkpoints, or the manifests of earlier exports."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import partialnet
from partialnet.errors import UsageError
from partialnet.export.output.files import sha256_path
from partialnet.export.targets import runtime_of, spec_of


@dataclass(frozen=True)
class ModelSpec:
    """How to build the eager model: here, and again in the export worker."""

    variant: str | None  # the variant, or a checkpoint's variant hint
    checkpoint: str | None = None
    features: bool = False  # a backbone (the four stage maps), built as --features builds it

    def build(self) -> torch.nn.Module:
        if self.features:
            from partialnet.export.source import resolve_source

            return resolve_source(self.checkpoint, self.variant, features=True).eager
        if self.checkpoint is not None:
            return partialnet.load_checkpoint(self.checkpoint, variant=self.variant).float().eval()
        torch.manual_seed(0)  # as partialnet-export --variant: the same random weights each run
        return partialnet.create_model(str(self.variant)).eval()


@dataclass
class Source:
    """One variant (row group): its model and where its artifacts come from."""

    label: str
    spec: ModelSpec
    chw: tuple[int, int, int]
    eager: torch.nn.Module | None = None
    given: dict[tuple[str, str], Path] | None = None  # from --artifacts; None: export here
    given_dir: Path | None = None
    stale: set[Path] = field(default_factory=set)  # files whose sha256 is not the manifest's


def sources_from_args(args: argparse.Namespace) -> list[Source]:
    if args.artifacts is not None:
        return _artifact_sources(args)
    if not args.checkpoint:
        variants = args.variants or partialnet.list_variants()
        return [_source(ModelSpec(v, features=args.features)) for v in variants]
    hints = args.variants or [None] * len(args.checkpoint)
    if len(hints) != len(args.checkpoint):
        raise UsageError(
            "with --checkpoint the variant comes from the checkpoint: drop --variants, or "
            "give exactly one variant per --checkpoint as a hint"
        )
    sources = [
        _source(ModelSpec(h, str(p), args.features), keep=True)
        for p, h in zip(args.checkpoint, hints, strict=True)
    ]
    return _unique_labels(sources, [p.stem for p in args.checkpoint])


def _source(spec: ModelSpec, keep: bool = False) -> Source:
    """A source for ``spec``; checkpoints are loaded now (a bad one is bad usage) and kept."""
    if spec.checkpoint is None:
        cfg = partialnet.get_config(str(spec.variant))
        return Source(cfg.name, spec, (cfg.in_chans, *cfg.meta.input_size))
    model = spec.build()
    return Source(
        model.cfg.name,
        spec,
        (model.cfg.in_chans, *model.cfg.meta.input_size),
        model if keep else None,
    )


def _unique_labels(sources: list[Source], tags: list[str]) -> list[Source]:
    labels = [s.label for s in sources]
    for source, tag in zip(sources, tags, strict=True):
        if labels.count(source.label) > 1:
            source.label = f"{source.label}@{tag}"
    return sources


def _artifact_sources(args: argparse.Namespace) -> list[Source]:
    """One source per manifest.json in --artifacts DIR or in its direct subdirectories."""
    from partialnet.export.output.manifest import MANIFEST_NAME, read_manifest, resolve_artifact

    root: Path = args.artifacts
    dirs = [root] if (root / MANIFEST_NAME).is_file() else []
    if not dirs and root.is_dir():
        dirs = sorted(d for d in root.iterdir() if (d / MANIFEST_NAME).is_file())
    if not dirs:
        raise UsageError(
            f"no {MANIFEST_NAME} in {root} or its subdirectories: pass a partialnet-export "
            "output directory (or a parity run's <output>/artifacts)"
        )
    checkpoints = {sha256_path(p): p for p in args.checkpoint or [] if p.is_file()}
    sources = []
    for directory in dirs:
        manifest = read_manifest(directory)  # a ManifestError (exit 2) names the bad entry
        if args.variants and manifest.variant not in args.variants:
            continue
        source = _source(_manifest_spec(manifest, directory, checkpoints), keep=True)
        source.chw = (source.chw[0], *manifest.input_size)  # the size it was exported at
        source.given, source.given_dir = {}, directory
        # Every path is proved inside the directory (and a regular file or directory)
        # before any is hashed or loaded: a FIFO would hang the hash, /etc/passwd leaks.
        paths = [resolve_artifact(directory, r, i) for i, r in enumerate(manifest.artifacts)]
        for record, path in zip(manifest.artifacts, paths, strict=True):
            runtime = runtime_of(record.target)  # None: a target this install does not know
            # int8: a runtime's cell checks its own Q/DQ flavour only (for_runtime)
            if runtime is not None and spec_of(record.target).for_runtime(record.details):
                source.given[(runtime, record.precision)] = path
                if sha256_path(path) != record.sha256:
                    source.stale.add(path)
        sources.append(source)
    if not sources:
        raise UsageError(f"no manifest in {root} is for {', '.join(args.variants)}")
    return _unique_labels(sources, [str(s.given_dir) for s in sources])


def _manifest_spec(manifest: Any, directory: Path, checkpoints: dict[str, Path]) -> ModelSpec:
    """The model the manifest's artifacts were exported from: its checkpoint, or for random
    weights the variant seeded as ``partialnet-export --variant`` seeds it."""
    features = "backbone_rule" in (manifest.data or {})
    if manifest.checkpoint is None:
        if manifest.variant not in partialnet.list_variants():
            raise UsageError(f"{directory}: unknown variant {manifest.variant!r} in manifest.json")
        return ModelSpec(manifest.variant, features=features)
    sha = str(manifest.checkpoint.get("sha256"))
    if sha not in checkpoints:
        raise UsageError(
            f"{directory} was exported from checkpoint {manifest.checkpoint.get('path')} "
            f"(sha256 {sha[:12]}...): pass that file with --checkpoint"
        )
    return ModelSpec(manifest.variant, str(checkpoints[sha]), features)


def weights_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()
