"""A one-line description of the machine a benchmark ran on, and the JSON it records."""

from __future__ import annotations

import platform
from pathlib import Path

from benchmarks import _protocol


def describe() -> str:
    """CPU, cores, jax and its device, Python, and the host's speed (the protocol's loop)."""
    import jax

    device, host = jax.devices()[0], _protocol.host()
    return (
        f"{host['cpu']}, {host['cores']} cores, jax {jax.__version__} on "
        f"{device.platform} ({device.device_kind}), python {platform.python_version()}, "
        f"a pure-Python loop of 10⁷ additions {host['loop_1e7_additions_s']:.2f} s"
    )


def record(name: str, measured: dict) -> Path:
    """Write ``benchmarks/results/<name>.json``: the measurements with the host they ran on."""
    import jax

    result = {"host": _protocol.host(), "jax": jax.__version__, **measured}
    path = _protocol.write(name, result)
    print(f"wrote {path}")
    return path
