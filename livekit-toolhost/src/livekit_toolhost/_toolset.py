"""The toolset: a toolhost MCP connection whose tools LiveKit runs with toolhost's behaviour."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mcp.types
from livekit.agents import RunContext
from livekit.agents.llm import ToolError, function_tool
from livekit.agents.llm.mcp import (
    MCPServer,
    MCPServerHTTP,
    MCPServerStdio,
    MCPTool,
    MCPToolResultContext,
    MCPToolset,
)
from typing_extensions import Self

from ._behaviour import (
    ANSWER_KEY,
    COMPANION_TOOLS,
    CONFIRM_ARGUMENT,
    Behaviour,
    logger,
    tool_options,
)

DEFAULT_CONNECT_TIMEOUT = 60.0
"""Seconds `setup()` waits for toolhost to start, load its plugins and list them."""


class ToolhostError(RuntimeError):
    """toolhost could not be found, started or reached."""


def text_result(ctx: MCPToolResultContext) -> Any:
    """A call's result as the model should read it: its text, else its data as JSON.

    toolhost answers with text (and, for tools with an output schema, the same
    data as `structuredContent`); LiveKit's default resolver would hand the
    model the JSON of the MCP content block instead. A result with neither
    text nor data is None, so it adds nothing to the conversation (B4).
    """
    result = ctx.result
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    if result.content:
        return json.dumps(
            [block.model_dump(by_alias=True, mode="json") for block in result.content],
            ensure_ascii=False,
        )
    return None


# The one private method of LiveKit's MCPServer the toolset relies on: a
# LiveKit release without it must fail here, not answer calls in `release` mode.
if not callable(getattr(MCPServer, "_call_tool", None)):
    raise ImportError(
        "livekit-toolhost needs MCPServer._call_tool of livekit-agents 1.8; "
        "install livekit-agents[mcp]>=1.8.9,<1.9"
    )


class _FinalAnswers(MCPServer):
    """Asks for toolhost's `final` answer mode on every call (`_meta` ANSWER_KEY).

    A call then stays open until it ends, its updates arriving as progress,
    whatever mode the server was started in.
    """

    async def _call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        progress_callback: Any = None,
    ) -> mcp.types.CallToolResult:
        client = self._client
        if client is None:
            raise ToolError(f"Tool {name} cannot run: the toolhost connection is closed.")
        result = await client.call_tool(
            name, arguments, progress_callback=progress_callback, meta={ANSWER_KEY: "final"}
        )
        if not isinstance(result, mcp.types.CallToolResult):
            raise ToolError(f"Tool {name} returned an unexpected MCP result.")
        return result


class _Stdio(_FinalAnswers, MCPServerStdio):
    pass


class _Http(_FinalAnswers, MCPServerHTTP):
    pass


def find_binary(binary: str | os.PathLike[str] | None = None) -> str:
    """The toolhost command: `binary`, else `$TOOLHOST_BIN`, else `toolhost` on PATH."""
    candidate = binary or os.environ.get("TOOLHOST_BIN") or shutil.which("toolhost")
    if not candidate:
        raise ToolhostError(
            "toolhost not found: put it on PATH (cargo install --path host), "
            "set TOOLHOST_BIN, or pass binary="
        )
    path = Path(candidate)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolhostError(f"toolhost at {path} is not an executable file")
    return str(path)


class ToolhostToolset(MCPToolset):
    """toolhost's tools for an `AgentSession` or `Agent`, configured by toolhost.

    Build it with `ToolhostToolset.stdio(plugins)` (starts `toolhost serve
    --answer final`) or `ToolhostToolset.http(url)` (any running server:
    every call asks for the `final` mode). `setup()`, which LiveKit calls
    when the session starts, connects and lists the tools; call
    `setup(reload=True)` after the plugin folder changed.

    Calls have no client-side time limit: toolhost ends every call by its own
    wall-clock limit (`timeout`, default 5 minutes) and answers with that error.
    """

    def __init__(
        self,
        server: MCPServer,
        *,
        id: str = "toolhost",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(id=id, mcp_server=server)
        self._connect_timeout = connect_timeout
        self._configure_lock = asyncio.Lock()
        self._configured = False
        self.behaviours: dict[str, Behaviour] = {}
        """Each exposed tool's behaviour as toolhost listed it (after `setup()`)."""

    @classmethod
    def stdio(
        cls,
        plugins: str | os.PathLike[str],
        *,
        binary: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        id: str = "toolhost",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> ToolhostToolset:
        """Start `toolhost serve --answer final` on the folder `plugins`.

        `binary` defaults to `$TOOLHOST_BIN`, then `toolhost` on PATH. `args`
        go after `serve` (e.g. `["--profile", "read-only"]`); `env` is the
        server's whole environment (default: the MCP SDK's safe subset, PATH
        and HOME among it); a relative `plugins` is resolved against `cwd`.
        """
        server = _Stdio(
            command=find_binary(binary),
            args=["serve", "--plugins", os.fspath(plugins), "--answer", "final", *args],
            env=env,
            cwd=cwd,
            # 0 is no limit: a call in `final` mode lasts as long as the tool runs.
            client_session_timeout_seconds=0,
            tool_result_resolver=text_result,
        )
        return cls(server, id=id, connect_timeout=connect_timeout)

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: dict[str, Any] | None = None,
        id: str = "toolhost",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> ToolhostToolset:
        """Connect to `toolhost serve --http ADDR` at `url` (`http://ADDR/mcp`).

        Every call asks for the `final` answer mode itself, so the server may
        run in either mode.
        """
        server = _Http(
            url,
            transport_type="streamable_http",
            headers=headers,
            timeout=connect_timeout,
            # No read limit on a call's stream: toolhost bounds every call itself.
            sse_read_timeout=None,  # type: ignore[arg-type]
            client_session_timeout_seconds=0,
            tool_result_resolver=text_result,
        )
        return cls(server, id=id, connect_timeout=connect_timeout)

    async def setup(self, *, reload: bool = False) -> Self:
        """Connect (once), list the tools and configure each from its behaviour."""
        async with self._configure_lock:
            if self._configured and not reload:
                return self
            try:
                await asyncio.wait_for(super().setup(reload=reload), self._connect_timeout)
            except asyncio.TimeoutError as e:
                raise ToolhostError(
                    f"toolhost did not list its tools within {self._connect_timeout} s "
                    f"({self._mcp_server!r})"
                ) from e
            # The list is cached by now: read each tool's behaviour from it, then
            # build the tools again with the options that behaviour asks for.
            behaviours: dict[str, Behaviour] = {}
            for tool in await self._mcp_server.list_tools():
                name = tool.info.name
                if name in COMPANION_TOOLS:
                    continue
                listed = Behaviour.from_meta(name, tool.info.raw_schema.get("meta"))
                if listed is None:
                    logger.warning(
                        "toolhost lists no behaviour for %s: run as a plain tool", name
                    )
                behaviours[name] = listed or Behaviour()
            options = {name: tool_options(b) for name, b in behaviours.items()}
            tools = await self._mcp_server.list_tools(tool_options=options)
            self._tool_options = options
            self._tools = [
                _confirm_in_livekit(tool) if behaviours[tool.info.name].on_duplicate == "confirm"
                else tool
                for tool in tools
                if tool.info.name in behaviours
            ]
            self.behaviours = behaviours
            self._configured = True
            return self

    async def call_host_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call one of toolhost's companion tools on this connection, e.g.
        `toolhost_running_tasks` or `toolhost_task_status`, and return its answer
        (the JSON text toolhost gives the model). For operators and tests: the
        model uses LiveKit's own task tools.
        """
        if name not in COMPANION_TOOLS:
            raise ValueError(f"{name} is not one of toolhost's companion tools")
        await self.setup()
        for tool in await self._mcp_server.list_tools():
            if tool.info.name == name:
                return await tool(arguments or {})
        raise ToolhostError(f"toolhost does not list {name}: no loaded tool needs it")

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._configured = False
            self.behaviours = {}


def _confirm_in_livekit(tool: MCPTool) -> MCPTool:
    """A `confirm` tool whose confirmation LiveKit asks for, not toolhost.

    LiveKit adds its own confirm argument and lets a call through only when
    it is not a duplicate or the model confirmed it; toolhost's
    `confirm_duplicate` is then hidden from the model and always sent as true,
    so toolhost does not ask a second time.
    """
    info = tool.info
    schema = copy.deepcopy(info.raw_schema)
    parameters = schema.get("parameters")
    if isinstance(parameters, dict):
        properties = parameters.get("properties")
        if isinstance(properties, dict):
            properties.pop(CONFIRM_ARGUMENT, None)
        required = parameters.get("required")
        if isinstance(required, list):
            parameters["required"] = [r for r in required if r != CONFIRM_ARGUMENT]

    async def confirmed(ctx: RunContext, raw_arguments: dict[str, Any]) -> Any:
        return await tool(ctx, {**raw_arguments, CONFIRM_ARGUMENT: True})

    return function_tool(
        confirmed,
        raw_schema=schema,
        flags=info.flags,
        on_duplicate=info.on_duplicate,
        duplicate_scope=info.duplicate_scope,
    )
