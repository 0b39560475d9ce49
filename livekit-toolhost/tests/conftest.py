"""Fixtures: the built toolhost, a small plugin folder, and toolsets over stdio and HTTP.

The tests need `target/debug/toolhost` (or `$TOOLHOST_BIN`) and the plugins
in `dist/` (`tools/build-plugins`); `run-tests` builds both.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livekit_toolhost import ToolhostToolset

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "plugins" / "rust-indexer" / "sample"
# Bounds for the host to come up; generous for a cold compile cache.
START_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def toolhost_bin() -> str:
    binary = Path(os.environ.get("TOOLHOST_BIN") or REPO / "target" / "debug" / "toolhost")
    if not binary.is_file():
        pytest.fail(f"no toolhost at {binary}: run `cargo build -p toolhost` or set TOOLHOST_BIN")
    return str(binary)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A folder with the indexer example and the `behave` test plugin (with a
    fuel budget of 10^12 units).

    The indexer's manifest is written anew with the sample folder's absolute
    path, as the one in dist/ names it relative to dist/plugins.
    """
    folder = tmp_path / "plugins"
    folder.mkdir()
    for wasm in (REPO / "dist/plugins/rust-indexer.wasm", REPO / "dist/test-plugins/behave.wasm"):
        if not wasm.is_file():
            pytest.fail(f"no {wasm}: run tools/build-plugins")
        shutil.copy(wasm, folder)
    (folder / "rust-indexer.toml").write_text(
        "[permissions]\n"
        f'dirs = [{{ host = "{SAMPLE}", guest = "/data", write = false }}]\n'
    )
    # A spinning tool runs until it is cancelled, not until its fuel ends:
    # the default budget lasts about 0.2 s on a quick machine.
    (folder / "behave.toml").write_text("[limits]\nfuel = 1_000_000_000_000\n")
    return folder


@pytest.fixture
async def stdio_toolset(toolhost_bin: str, plugins: Path) -> AsyncIterator[ToolhostToolset]:
    toolset = ToolhostToolset.stdio(plugins, binary=toolhost_bin, connect_timeout=START_TIMEOUT)
    try:
        yield toolset
    finally:
        await toolset.aclose()


@pytest.fixture
async def http_server(toolhost_bin: str, plugins: Path) -> AsyncIterator[str]:
    """`toolhost serve --http` on a free loopback port, in its default
    (`release`) answer mode: the toolset asks for `final` per call. Yields its URL."""
    process = await asyncio.create_subprocess_exec(
        toolhost_bin,
        "serve",
        "--plugins",
        str(plugins),
        "--http",
        "127.0.0.1:0",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    drain = None
    try:
        url = await asyncio.wait_for(_served_url(process.stderr), START_TIMEOUT)
        # Keep reading its log, so a full pipe never blocks the server.
        drain = asyncio.create_task(_drain(process.stderr))
        yield url
    finally:
        if drain is not None:
            drain.cancel()
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


async def _served_url(stderr: asyncio.StreamReader) -> str:
    seen = []
    while line := (await stderr.readline()).decode(errors="replace"):
        seen.append(line)
        if match := re.search(r"serving MCP on (\S+)", line):
            return match.group(1)
    raise AssertionError("toolhost serve --http exited without serving:\n" + "".join(seen))


async def _drain(stderr: asyncio.StreamReader) -> None:
    while await stderr.read(65536):
        pass


@pytest.fixture
async def http_toolset(http_server: str) -> AsyncIterator[ToolhostToolset]:
    toolset = ToolhostToolset.http(http_server, connect_timeout=START_TIMEOUT)
    try:
        yield toolset
    finally:
        await toolset.aclose()


@pytest.fixture(params=["stdio", "http"])
def toolset(request: pytest.FixtureRequest) -> ToolhostToolset:
    """The toolset over each transport."""
    return request.getfixturevalue(f"{request.param}_toolset")
