"""``HostOptions``: what :func:`jaxreg.fit` does between compiled chunks, from the host.

These options only act when ``fit`` is called from the host (its results are
concrete arrays). Under ``jit``/``vmap``/``grad`` there is no host between
chunks: progress is not shown, a divergence is only flagged per member, and a
checkpoint directory is refused with a ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["HostOptions"]

NonFinitePolicy = Literal["raise", "warn", "ignore"]
StepDriver = Literal["scan", "host"]


@dataclass(frozen=True)
class HostOptions:
    """Host-side behaviour of :func:`jaxreg.fit`: checkpoints, progress, chunking, divergence.

    Attributes:
      checkpoint_dir: save the training state there (orbax) after every chunk
        of epochs and resume from the latest checkpoint if one exists; the
        resumed run is bitwise equal to an uninterrupted one.
      progress: show a progress bar with the chunk's last metrics.
      epochs_per_chunk: epochs per compiled call; default one chunk, or about
        20 chunks with ``progress`` (10 with checkpoints).
      on_nonfinite: what to do when the training objective becomes NaN or
        infinite: ``"raise"`` (``FloatingPointError`` naming the epoch),
        ``"warn"`` or ``"ignore"``.
      steps: ``"scan"`` (default) compiles each chunk of epochs into one
        program (``lax.scan`` over minibatch steps); ``"host"`` calls one
        compiled step per minibatch from a Python loop, as a hand-written loop
        does (:func:`~jaxreg.training.run_stepwise`; equal to float rounding).
        Use ``"host"`` for convolutional models on CPU, where XLA runs the
        gradient convolutions inside a ``scan`` body with a naive kernel (6–18×
        slower per step); keep ``"scan"`` on GPU/TPU and under ``jit``/``vmap``.
        An NNX model stays fast under ``"scan"`` after
        :func:`jaxreg.nn.swap_stock_convs`.

    Example:
      >>> options = HostOptions(progress=True, epochs_per_chunk=5)
      >>> options.chunk_length(num_epochs=12)
      5
      >>> HostOptions(progress=True).chunk_length(num_epochs=100)  # about 20 chunks
      5
      >>> HostOptions(on_nonfinite="stop")
      Traceback (most recent call last):
      ...
      ValueError: on_nonfinite must be 'raise', 'warn' or 'ignore', got 'stop'
    """

    checkpoint_dir: str | Path | None = None
    progress: bool = False
    epochs_per_chunk: int | None = None
    on_nonfinite: NonFinitePolicy = "raise"
    steps: StepDriver = "scan"

    def __post_init__(self) -> None:
        if self.on_nonfinite not in ("raise", "warn", "ignore"):
            raise ValueError(
                f"on_nonfinite must be 'raise', 'warn' or 'ignore', got {self.on_nonfinite!r}"
            )
        if self.steps not in ("scan", "host"):
            raise ValueError(f"steps must be 'scan' or 'host', got {self.steps!r}")
        chunk = self.epochs_per_chunk
        if chunk is not None:
            if isinstance(chunk, bool) or not isinstance(chunk, int):
                raise TypeError(f"epochs_per_chunk must be an int, got {chunk!r}")
            if chunk <= 0:
                raise ValueError(f"epochs_per_chunk must be positive, got {chunk!r}")
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool, got {self.progress!r}")

    def chunk_length(self, num_epochs: int) -> int:
        """Epochs per compiled call for a run of ``num_epochs``."""
        if self.epochs_per_chunk is not None:
            return self.epochs_per_chunk
        chunks_wanted = 20 if self.progress else 10 if self.checkpoint_dir is not None else 1
        return max(1, math.ceil(num_epochs / chunks_wanted))
