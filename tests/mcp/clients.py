"""Drive `toolhost serve` with MCP clients from other projects, as their
users run them, and check one behaviour per run. Run by tests/clients.rs;
exits non-zero with the reason when the server does not behave.

    clients.py --stdio TOOLHOST_BIN --plugins DIR [--answer-by flag|meta] SCENARIO
    clients.py --url http://127.0.0.1:PORT/mcp [--answer-by meta] SCENARIO

Scenarios:
- `fastmcp`: fastmcp's `Client` lists the tools and calls `progress` with a
  progress handler in answer mode `final`: every update arrives as progress,
  then the final result.
- `langchain`: langchain-mcp-adapters' `MultiServerMCPClient`, which opens a
  session per tool call (its documented default), lists the tools and gets
  the final result of a background tool. It needs `mcp<2`, so it runs from
  its own venv (tests/mcp/requirements-langchain.txt).

`--answer-by flag` starts the stdio server with `serve --answer final` (over
HTTP: the test started it so); `--answer-by meta` asks for `final` per
request with the `_meta` key `dev.toolhost/answer`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

ANSWER_KEY = "dev.toolhost/answer"
STEPS = 3
ARGUMENTS = {"n": STEPS, "sleep_ms": 50}
FINAL = f"done after {STEPS} steps"
# A call answers within this, or the client is stuck.
CALL_TIMEOUT_S = 60


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def server_args(args: argparse.Namespace) -> list[str]:
    serve = ["--plugins", args.plugins, "serve"]
    if args.answer_by == "flag":
        serve += ["--answer", "final"]
    return serve


def answer_meta(args: argparse.Namespace) -> dict[str, Any] | None:
    return {ANSWER_KEY: "final"} if args.answer_by == "meta" else None


# --- fastmcp ---


async def fastmcp_scenario(args: argparse.Namespace) -> None:
    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

    if args.url:
        transport = StreamableHttpTransport(args.url)
    else:
        transport = StdioTransport(command=args.stdio, args=server_args(args))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(transport) as client:
        names = {t.name for t in await client.list_tools()}
        check({"progress", "data", "toolhost_cancel_task"} <= names, f"tools listed: {sorted(names)}")
        with anyio.fail_after(CALL_TIMEOUT_S):
            result = await client.call_tool(
                "progress",
                ARGUMENTS,
                progress_handler=on_progress,
                meta=answer_meta(args),
            )
    text = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    check(text == FINAL, f"the answer is not the final result: {text!r} (progress: {progress})")
    check(
        len(progress) == STEPS,
        f"expected {STEPS} progress notifications before the result, got {progress}",
    )
    check(
        all(m and f"step {i + 1} of {STEPS}" in m for i, (_, _, m) in enumerate(progress)),
        f"progress messages out of order or missing: {progress}",
    )


# --- langchain-mcp-adapters ---


async def langchain_scenario(args: argparse.Namespace) -> None:
    from langchain_mcp_adapters.client import MultiServerMCPClient

    check(args.stdio is not None, "the langchain scenario runs over stdio")
    # No `session()`: every tool call opens and closes its own session, as
    # MultiServerMCPClient's documentation shows it.
    client = MultiServerMCPClient(
        {"toolhost": {"transport": "stdio", "command": args.stdio, "args": server_args(args)}}
    )
    tools = {t.name: t for t in await client.get_tools()}
    check({"progress", "data"} <= set(tools), f"tools listed: {sorted(tools)}")
    with anyio.fail_after(CALL_TIMEOUT_S):
        content = await tools["progress"].ainvoke(ARGUMENTS)
    text = content_text(content)
    check(text == FINAL, f"the answer is not the final result: {text!r}")


def content_text(content: Any) -> str:
    """The text of a tool's answer as langchain hands it to the model: a
    string, or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b if isinstance(b, str) else str(b.get("text", "")) for b in content if isinstance(b, (str, dict))
        )
    return str(content)


SCENARIOS = {"fastmcp": fastmcp_scenario, "langchain": langchain_scenario}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stdio", help="the toolhost binary to start over stdio")
    target.add_argument("--url", help="the streamable HTTP URL of a running toolhost serve")
    parser.add_argument("--plugins", help="the plugin folder (with --stdio)")
    parser.add_argument("--answer-by", choices=["flag", "meta"], default="flag")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    if args.stdio and not args.plugins:
        parser.error("--stdio needs --plugins")
    try:
        anyio.run(SCENARIOS[args.scenario], args)
    except Failed as failure:
        print(f"FAILED {args.scenario}: {failure}", file=sys.stderr)
        return 1
    print(f"ok {args.scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
