"""Progress bars stay quiet off a terminal and can be forced on or off."""

from __future__ import annotations

import io

from curate.progress import progress, progress_bar


def test_quiet_off_tty_and_forced(monkeypatch, capsys):
    monkeypatch.delenv("SLUICE_PROGRESS", raising=False)
    assert list(progress(range(5), "x")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""  # pytest's stderr is not a TTY
    buf = io.StringIO()
    monkeypatch.setenv("SLUICE_PROGRESS", "1")
    assert sum(progress(range(50), "count", file=buf, mininterval=0)) == sum(range(50))
    assert "count" in buf.getvalue() and "50/50" in buf.getvalue()
    monkeypatch.setenv("SLUICE_PROGRESS", "0")
    buf = io.StringIO()
    with progress_bar(total=3, desc="bar", file=buf) as bar:
        bar.update(3)
    assert buf.getvalue() == ""
