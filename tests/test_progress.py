"""Progress without a terminal is plain lines (readable in a log), with a terminal tqdm's bar."""

import io

from jaxreg.progress import PlainProgress, progress_bar


def test_plain_progress_prints_throttled_lines_and_always_the_last():
    stream = io.StringIO()
    bar = PlainProgress(total=5, desc="fit", unit="epoch", file=stream, every_seconds=3600)
    bar.set_postfix({"eval_accuracy": "0.612"})
    for _ in range(5):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fit: 5/5 epochs (eval_accuracy=0.612), ")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_terminal_gets_tqdms_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(3, desc="sweep", unit="chunk", file=Terminal())
    assert type(bar).__module__.startswith("tqdm")
    bar.close()
    assert isinstance(
        progress_bar(3, desc="sweep", unit="chunk", file=io.StringIO()), PlainProgress
    )
