"""Subprocesses: a hard deadline that kills the whole process group, and errors with the output."""

from __future__ import annotations

import time

import pytest

from tasks.core.process import CommandFailed, CommandTimedOut, ToolMissing, run_command


def test_command_past_its_deadline_is_killed_with_everything_it_forked(tmp_path):
    marker = tmp_path / "child-survived"
    started = time.monotonic()
    with pytest.raises(CommandTimedOut, match="deadline"):
        run_command(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 5
    time.sleep(2.5)
    assert not marker.exists(), "the forked child outlived the deadline"


def test_failed_command_carries_the_tools_own_message():
    with pytest.raises(CommandFailed) as info:
        run_command(["sh", "-c", "echo 'ERROR: [055]: no such stanza' >&2; exit 3"], timeout=10)
    assert info.value.returncode == 3
    assert "[055]: no such stanza" in str(info.value)


def test_missing_tool_is_named():
    with pytest.raises(ToolMissing, match="no-such-tool-xyz"):
        run_command(["no-such-tool-xyz"], timeout=10)
