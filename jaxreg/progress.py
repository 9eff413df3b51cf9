"""Progress for long runs: tqdm's bar on a terminal or in a notebook, plain lines in a log.

A bar redraws itself with carriage returns and cursor codes, which fill a redirected log
(CI, ``nohup``, ``> run.log``) with one unreadable line. Without a terminal,
:func:`progress_bar` prints a short line per update instead, at most one every
``every_seconds`` (and always the last).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["PlainProgress", "progress_bar"]


class PlainProgress:
    """tqdm's ``update``/``set_postfix``/``set_postfix_str``/``close`` as plain lines.

    Example:
      >>> import io
      >>> stream = io.StringIO()
      >>> bar = PlainProgress(total=2, desc="tour", unit="row", file=stream, every_seconds=0)
      >>> bar.set_postfix_str("dropout"); bar.update(); bar.update(); bar.close()
      >>> stream.getvalue().splitlines()[0].startswith("tour: 1/2 rows (dropout)")
      True
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        initial: int = 0,
        file: TextIO | None = None,
        every_seconds: float = 10.0,
    ):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = sys.stderr if file is None else file
        self.every_seconds = every_seconds
        self.postfix = ""
        self.start = self.last = time.monotonic()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.n >= self.total or now - self.last >= self.every_seconds:
            self.last = now
            shown = f" ({self.postfix})" if self.postfix else ""
            print(
                f"{self.desc}: {self.n}/{self.total} {self.unit}s{shown}, {now - self.start:.0f} s",
                file=self.file,
                flush=True,
            )

    def close(self) -> None:
        pass


def progress_bar(
    total: int,
    *,
    desc: str,
    unit: str,
    initial: int = 0,
    leave: bool = True,
    file: TextIO | None = None,
):
    """tqdm's bar when ``file`` (default stderr) is a terminal or a notebook runs, else
    :class:`PlainProgress` lines.

    Example:
      >>> import io
      >>> type(progress_bar(3, desc="fit", unit="epoch", file=io.StringIO())).__name__
      'PlainProgress'
    """
    stream = sys.stderr if file is None else file
    # A notebook kernel's streams are ipykernel's (importing ipykernel elsewhere is not it).
    in_notebook = type(stream).__module__.startswith("ipykernel")
    interactive = in_notebook or getattr(stream, "isatty", lambda: False)()
    if not interactive:
        return PlainProgress(total, desc=desc, unit=unit, initial=initial, file=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=stream)
