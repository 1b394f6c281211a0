"""Log lines for journald: `<N>` syslog priorities, only when stderr is the journal stream."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from gateway.runtime.logs import JournalFormatter, stream_is_journal, syslog_priority


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
     (logging.CRITICAL, 2), (logging.INFO + 5, 6), (logging.WARNING + 1, 4)],
)  # fmt: skip
def test_levels_map_to_rfc5424_severities(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


def test_every_line_of_a_traceback_gets_the_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("gw", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())  # fmt: skip
    lines = JournalFormatter("%(levelname)s %(name)s: %(message)s").format(record).splitlines()
    assert lines[0] == "<3>ERROR gw: failed"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_journal_stream_counts_only_for_the_stream_it_names(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "other").open("w") as other:
        status = os.fstat(journal.fileno())
        env = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert stream_is_journal(env, journal)
        # Inherited by a child whose stderr was redirected: not the journal.
        assert not stream_is_journal(env, other)
        assert not stream_is_journal({}, journal)
        assert not stream_is_journal({"JOURNAL_STREAM": "garbage"}, journal)


def test_check_config_problems_reach_the_journal_as_errors(tmp_path: Path) -> None:
    """Under ExecStartPre= a bad configuration is what `journalctl -p err` must show."""
    import subprocess

    (tmp_path / "gateway.yaml").write_text("site: s\ngateway_id: g\nstorage:\n  colour: red\n")
    journal = tmp_path / "journal"
    with journal.open("wb") as stderr:
        status = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(tmp_path)],
            stderr=stderr, stdout=subprocess.PIPE, env=env, cwd=tmp_path, timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode == 78
    lines = journal.read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert "<3>gateway.yaml:4: storage.colour: unknown key `colour`" in lines
