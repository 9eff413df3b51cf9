"""Hyperparameter sweeps as one compiled, vmapped program: chunked, sharded, resumable.

``run(train_fn, configs, key=..., seeds=S)`` calls ``train_fn(config, key)`` for
every config × seed under ``jax.vmap`` and ``jax.jit`` — one compile for the
whole sweep, since hyperparameters are traced values. ``chunk_size`` bounds
peak memory (chunks go through the same compiled function; the last one is
padded); ``mesh`` shards the member axis over devices; ``out_dir`` writes each
finished chunk at once (atomically, ``.npz`` with a checksum, no pickle) so an
interrupted sweep resumes where it stopped and ends with the same result.

Multi-process (several hosts, or several processes on one): call
``jax.distributed.initialize()`` in every process first, then run the same
``run`` call everywhere with a mesh over ``jax.devices()`` (all processes'
devices, e.g. ``mesh="auto"``). Each process feeds its own devices' slice of
every chunk; every process gets the whole result; with ``out_dir`` (a folder
all processes see) only process 0 writes, and all processes agree on which
chunks to resume. Tested with two local processes (CPU collectives over gloo)
and with eight simulated CPU devices in one process.
"""

from jaxreg.sweeps.execution import run as run
from jaxreg.sweeps.result import SweepResult as SweepResult
from jaxreg.sweeps.spaces import Choice as Choice
from jaxreg.sweeps.spaces import LogUniform as LogUniform
from jaxreg.sweeps.spaces import Uniform as Uniform
from jaxreg.sweeps.spaces import grid as grid
from jaxreg.sweeps.spaces import random as random

__all__ = ["Choice", "LogUniform", "SweepResult", "Uniform", "grid", "random", "run"]
