"""Routing a handler's output to its function log, without SMTP."""

from __future__ import annotations

import logging

from sesrx.lambda_logs import Capture, FunctionLog, InvocationLog, capture


def lines_of(path) -> list[str]:
    return [line.split("\t", 2)[2] for line in path.read_text().splitlines()]


def test_a_bad_log_call_does_not_raise_into_the_handler(tmp_path, capsys):
    """Wrong % arguments are reported as logging reports them; the caller goes on."""
    sink = FunctionLog(tmp_path / "f.log")
    invocation = InvocationLog("f", "req-1", sink)
    record = logging.LogRecord("my.handler", logging.WARNING, __file__, 1,
                               "count %d", ("not a number",), None)  # fmt: skip

    capture(invocation).run(Capture._sink.emit, record)

    assert "--- Logging error ---" in capsys.readouterr().err
    assert not (tmp_path / "f.log").exists()


def test_lines_are_split_and_text_is_kept_whatever_its_bytes(tmp_path):
    """Partial writes join into lines; text that is not valid Unicode is escaped."""
    sink = FunctionLog(tmp_path / "f.log")
    invocation = InvocationLog("f", "req-1", sink)

    for part in ("one ", "two\nthree\n", "bad \udcff", "\n", "tail"):
        invocation.printed(part)
    invocation.flush()
    sink.close()

    assert lines_of(tmp_path / "f.log") == ["one two", "three", "bad \\udcff", "tail"]


def test_a_deleted_log_file_is_written_again(tmp_path):
    """When the data folder is emptied, the next line makes a new file."""
    sink = FunctionLog(tmp_path / "logs" / "f.log")
    sink.write("r1", "before")
    (tmp_path / "logs" / "f.log").unlink()
    (tmp_path / "logs").rmdir()

    sink.write("r2", "after")
    sink.close()

    assert lines_of(tmp_path / "logs" / "f.log") == ["after"]
