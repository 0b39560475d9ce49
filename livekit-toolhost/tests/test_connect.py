"""Starting and reaching toolhost fails with a clear error, in bounded time."""

from __future__ import annotations

from pathlib import Path

import pytest

from livekit_toolhost import ToolhostError, ToolhostToolset


def test_a_missing_binary_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLHOST_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolhostError, match="toolhost not found"):
        ToolhostToolset.stdio(tmp_path)
    with pytest.raises(ToolhostError, match="not an executable file"):
        ToolhostToolset.stdio(tmp_path, binary=tmp_path / "nothing-here")


async def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    toolset = ToolhostToolset.stdio(tmp_path, binary=silent, connect_timeout=0.5)
    try:
        with pytest.raises(ToolhostError, match="did not list its tools within 0.5 s"):
            await toolset.setup()
    finally:
        await toolset.aclose()


async def test_the_served_tools_come_from_the_binary_named_in_the_environment(
    toolhost_bin: str, plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLHOST_BIN", toolhost_bin)
    toolset = ToolhostToolset.stdio(plugins)
    try:
        await toolset.setup()
        assert "index_directory" in {tool.info.name for tool in toolset.tools}
    finally:
        await toolset.aclose()
