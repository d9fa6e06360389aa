"""torchrec's own train pipelines, configured for tml: bf16 autocast and gradient accumulation.

`TrainPipelineSparseDist` on GPUs or with several ranks (it overlaps the batch copy and the sparse
input_dist with compute); `TrainPipelineBase` for a single CPU process, where there is nothing to
overlap and the sparse-dist bookkeeping only costs time.

The original shipped a hand-edited copy of torchrec's pipeline to get these two features. Both fit
torchrec's extension points instead: the forward is wrapped through `custom_model_fwd`, and
accumulation is torchrec's `GradientAccumulationWrapper`.

Model contract (torchrec's): `model(batch) -> (loss, outputs)`, the batch a torchrec `Pipelineable`.

Accumulation covers the dense parameters only: tables with a fused (in-backward) optimizer are
updated by torchrec inside every backward, so they step once per micro-batch.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from torchrec.distributed.train_pipeline.gradient_accumulation import (
    GradientAccumulationConfig,
    GradientAccumulationWrapper,
)

from tml.core.finite_guard import FiniteLossGuard


def autocast_context(device: torch.device, enable_amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast: no loss scaling needed (bf16 keeps fp32's exponent range), on CPU and GPU."""
    if not enable_amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _scaled_forward(
    model: torch.nn.Module,
    device: torch.device,
    enable_amp: bool,
    accumulation_steps: int,
    loss_guard: Optional[FiniteLossGuard] = None,
) -> Callable[[Any], tuple[torch.Tensor, Any]]:
    def forward(batch: Any) -> tuple[torch.Tensor, Any]:
        with autocast_context(device, enable_amp):
            loss, outputs = model(batch)
        if isinstance(outputs, dict):
            outputs = {**outputs, "loss": loss.detach()}
        if loss_guard is not None and model.training:  # before the backward, which updates fused tables
            loss = loss_guard.guard(loss, batch)
        # Accumulated gradients must average, not sum, the micro-batches; the loss that is
        # reported stays unscaled (it is put in `outputs` above).
        return (loss / accumulation_steps if accumulation_steps > 1 else loss), outputs

    return forward


class _ForwardWithAmpAndScaling(torch.nn.Module):
    """The same forward as `_scaled_forward`, as a module: TrainPipelineBase calls its model directly."""

    def __init__(self, model: torch.nn.Module, forward: Callable[[Any], tuple[torch.Tensor, Any]]) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, batch: Any) -> tuple[torch.Tensor, Any]:
        return self._forward(batch)


def _overlaps_anything(device: torch.device) -> bool:
    """TrainPipelineSparseDist hides copies and input_dist behind compute: that needs a GPU or peers."""
    import torch.distributed as dist

    world_size = dist.get_world_size() if dist.is_initialized() else 1
    return device.type != "cpu" or world_size > 1


class TrainStepRunner:
    """Runs one optimizer step (one or more micro-batches) through torchrec's pipeline."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        enable_amp: bool = False,
        gradient_accumulation: Optional[int] = None,
        loss_guard: Optional[FiniteLossGuard] = None,
    ) -> None:
        """`loss_guard` checks every micro-batch's loss before its backward (see core.finite_guard)."""
        self.loss_guard = loss_guard
        self.accumulation_steps = int(gradient_accumulation or 1)
        if self.accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation must be >= 1, got {gradient_accumulation}")
        self.model = model
        forward = _scaled_forward(model, device, enable_amp, self.accumulation_steps, loss_guard)
        self._wrapper: Optional[_ForwardWithAmpAndScaling] = None
        pipeline: Any
        if _overlaps_anything(device):
            pipeline = TrainPipelineSparseDist(
                model, optimizer, device, execute_all_batches=True, custom_model_fwd=forward
            )
        else:
            # One CPU process has nothing to overlap; the plain pipeline saves ~7% per step.
            self._wrapper = _ForwardWithAmpAndScaling(model, forward)
            pipeline = TrainPipelineBase(self._wrapper, optimizer, device)
        self._accumulator: Optional[GradientAccumulationWrapper] = None
        if self.accumulation_steps > 1:
            self._accumulator = GradientAccumulationWrapper(
                pipeline, optimizer, model, GradientAccumulationConfig(num_steps=self.accumulation_steps)
            )
        self.pipeline = pipeline

    def start_at(self, step: int) -> None:
        """Align the accumulation counter after a resume, so steps stay on micro-batch boundaries."""
        if self._accumulator is not None:
            self._accumulator.set_step(step * self.accumulation_steps)

    def step(self, batches: Iterator[Any]) -> list[Any]:
        """One optimizer step; returns the outputs of its micro-batches. StopIteration when data ends."""
        # Module.train() walks every submodule: only pay for it after an evaluation switched modes.
        if not self.model.training:
            self.model.train()
        if self._wrapper is not None and not self._wrapper.training:
            self._wrapper.train()
        if self.loss_guard is not None:
            self.loss_guard.skipped_in_step = False
        outputs = []
        for _ in range(self.accumulation_steps):
            runner = self._accumulator if self._accumulator is not None else self.pipeline
            outputs.append(runner.progress(batches))
        return outputs

    def detach(self) -> torch.nn.Module:
        """Give the model back for direct calls (evaluation); the next `step` re-attaches it."""
        detach = getattr(self.pipeline, "detach", None)  # only the sparse-dist pipeline rewrites the model
        return detach() if detach is not None else self.model
