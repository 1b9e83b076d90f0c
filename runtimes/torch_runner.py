"""Run an eager or inference-form torch module on the CPU: the reference every runtime meets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from partialnet.errors import UsageError
from partialnet.outputs import name_outputs

from .base import UNBOUNDED_BATCH, Runner, RunnerInfo, Runtime, check_options

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _model_precision(model: nn.Module) -> str:
    declared = getattr(model, "precision", None)  # set by partialnet's inference form
    if declared in _DTYPES:
        return declared
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return "fp16" if param is not None and param.dtype == torch.float16 else "fp32"


class TorchRunner(Runner):
    """Runs ``model`` as given, in eval mode under ``torch.inference_mode``.

    ``precision`` states what the caller expects the model to be; the runner converts
    nothing, so an fp32 model asked to run as fp16 is refused with the fix.
    """

    name = Runtime.TORCH.value

    def __init__(self, model: nn.Module, precision: str = "fp32", threads: int | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UsageError(f"TorchRunner takes a torch.nn.Module, got {type(model).__name__}")
        check_options(threads, precision=(precision, tuple(_DTYPES)))
        actual = _model_precision(model)
        if actual != precision:
            raise UsageError(
                f"TorchRunner was asked for {precision} but the model is {actual}; the runner "
                "converts nothing: pass a model of that precision (partialnet's "
                "inference.to_fp16(model) for an inference-form PartialNet, model.half() else)"
            )
        self.model, self.precision, self.threads = model, precision, threads
        self._saved_threads: int | None = None
        self._was_training = model.training
        cfg = getattr(model, "cfg", None)
        chans = getattr(cfg, "in_chans", None)
        if chans is None:
            conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            chans = conv.in_channels if conv is not None else -1
        h, w = getattr(model, "input_size", (-1, -1))  # inference form is built for one size
        self.input_shape = (-1, chans, h, w)
        self.artifact_label = type(model).__name__
        # partialnet's inference form casts at its own edges (float32 in and out); a plain
        # module converted with .half() needs float16 input.
        self._in_dtype = torch.float32 if hasattr(model, "precision") else _DTYPES[precision]

    def _activate(self) -> None:
        if self.threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self._was_training = self.model.training
        self.model.eval()

    def _deactivate(self) -> None:
        if self._active:
            self.model.train(self._was_training)
            if self._saved_threads is not None:
                torch.set_num_threads(self._saved_threads)
                self._saved_threads = None

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self._in_dtype))
        # Named as every export names them (partialnet.outputs).
        return {name: t.float().numpy() for name, t in name_outputs(out).items()}

    def info(self) -> RunnerInfo:
        return self._info()  # describes the model whether or not the runner is active

    def _info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime=self.name,
            version=torch.__version__,
            device="cpu",
            precision=self.precision,
            provider="eager",
            input_shape=self.input_shape,
            batch_range=(1, UNBOUNDED_BATCH),
            extra={"threads": torch.get_num_threads(), "module": type(self.model).__name__},
        )
