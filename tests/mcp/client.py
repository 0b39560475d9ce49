"""Drive `toolhost serve` with the Python MCP SDK (the `mcp` package) and
check one behaviour per run. Run by tests/mcp.rs; exits non-zero with the
reason when the server does not behave.

    client.py --stdio TOOLHOST_BIN --plugins DIR [--mode auto|legacy] SCENARIO
    client.py --url http://127.0.0.1:PORT/mcp [--mode auto|legacy] SCENARIO

`--mode auto` lets the SDK negotiate (2026-07-28 against toolhost);
`--mode legacy` forces the `initialize` handshake (2025-11-25).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from pydantic import ConfigDict

TASKS = "io.modelcontextprotocol/tasks"
CALL_ID = re.compile(r"call_[0-9a-f]+_\d+")


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


# --- The tasks extension (SEP-2663), which the SDK leaves to extensions ---


class CreatedTask(mcp_types.Result):
    """A `tools/call` answered with a task (`resultType: "task"`)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int | None = None


class DetailedTask(mcp_types.Result):
    """What `tasks/get` answers."""

    model_config = ConfigDict(extra="allow")
    result_type: str | None = None
    task_id: str
    status: str
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Ack(mcp_types.Result):
    model_config = ConfigDict(extra="allow")
    result_type: str | None = None


class TaskParams(mcp_types.RequestParams):
    task_id: str


class GetTask(mcp_types.Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskParams
    name_param = "taskId"


class CancelTask(mcp_types.Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskParams
    name_param = "taskId"


async def get_task(client: Client, task_id: str) -> DetailedTask:
    return await client.session.send_request(GetTask(params=TaskParams(task_id=task_id)), DetailedTask)


async def cancel_task(client: Client, task_id: str) -> None:
    await client.session.send_request(CancelTask(params=TaskParams(task_id=task_id)), Ack)


async def settle(client: Client, task_id: str, seen: list[str] | None = None, limit: float = 20) -> DetailedTask:
    """Poll `tasks/get` until the task ends; collect the status messages."""
    deadline = time.monotonic() + limit
    while True:
        task = await get_task(client, task_id)
        if seen is not None and task.status_message and (not seen or seen[-1] != task.status_message):
            seen.append(task.status_message)
        if task.status in ("completed", "failed", "cancelled"):
            return task
        check(task.status == "working", f"unexpected task status {task.status}")
        check(time.monotonic() < deadline, f"task {task_id} did not end: {task}")
        await anyio.sleep(0.05)


async def resolve(created: CreatedTask, ctx: ClaimContext) -> mcp_types.CallToolResult:
    raise Failed("tasks are followed by hand in these checks")


class Tasks(ClientExtension):
    identifier = TASKS

    def claims(self):
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=resolve)]


# --- Helpers over toolhost's companion tools ---


async def running(client: Client) -> list[dict[str, Any]]:
    r = await client.call_tool("toolhost_running_tasks", {})
    return r.structured_content["tasks"]


async def wait_running(client: Client, tool: str, limit: float = 10) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for task in await running(client):
            if task["tool"] == tool:
                return task["call_id"]
        await anyio.sleep(0.05)
    raise Failed(f"{tool} never showed as running")


async def wait_status(client: Client, call_id: str, want: str, limit: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.call_tool("toolhost_task_status", {"call_id": call_id})
        record = r.structured_content
        if record["status"] == want:
            return record
        await anyio.sleep(0.05)
    raise Failed(f"{call_id} is {record.get('status')}, not {want}: {record}")


# --- Scenarios ---


async def scenario_list(client: Client, args: argparse.Namespace) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("ok", "data", "typed", "progress", "toolhost_running_tasks", "toolhost_task_status", "toolhost_cancel_task"):
        check(name in tools, f"{name} is not listed: {sorted(tools)}")
    typed = tools["typed"]
    check(typed.input_schema.get("required") == ["name", "count"], f"typed schema: {typed.input_schema}")
    check(typed.title == "Typed", f"typed title: {typed.title}")
    check(tools["data"].output_schema is not None, "data has no outputSchema")
    # Its first update answers a call, without data: no outputSchema to check.
    check(tools["progress_data"].output_schema is None, "progress_data lists an outputSchema")
    check(tools["update_then_data"].output_schema is not None, "update_then_data lists no outputSchema")
    confirm = tools["confirm_me"].input_schema["properties"]
    check("confirm_duplicate" in confirm, f"confirm_me lacks confirm_duplicate: {confirm}")


async def scenario_call(client: Client, args: argparse.Namespace) -> None:
    r = await client.call_tool("ok", {})
    check(not r.is_error and text_of(r) == "ok", f"ok: {r}")
    r = await client.call_tool("data", {"n": 21})
    check(r.structured_content == {"n": 21, "double": 42}, f"data: {r}")
    check('"double":42' in text_of(r), f"data has no JSON text: {r}")
    r = await client.call_tool("no_such_tool", {})
    check(bool(r.is_error), f"an unknown tool is not an error: {r}")


async def scenario_invalid_arguments(client: Client, args: argparse.Namespace) -> None:
    r = await client.call_tool("typed", {"name": "x"})
    check(bool(r.is_error), f"a missing field is not an error: {r}")
    check("count" in text_of(r) and "typed" in text_of(r), f"the message names no field: {text_of(r)}")
    r = await client.call_tool("typed", {"name": "x", "count": "three"})
    check(bool(r.is_error) and "count" in text_of(r), f"a wrong type: {r}")
    r = await client.call_tool("typed", {"name": "x", "count": 3})
    check(not r.is_error and text_of(r) == "name=x count=3 flag=false", f"valid arguments: {r}")


async def scenario_progress(client: Client, args: argparse.Namespace) -> None:
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    r = await client.call_tool("progress", {"n": 3, "sleep_ms": 150}, progress_callback=on_progress)
    answer = text_of(r)
    check("step 1 of 3" in answer, f"the first update does not answer: {answer}")
    check(seen[:1] == [(1.0, "step 1 of 3")], f"progress notifications: {seen}")
    match = CALL_ID.search(answer)
    check(match is not None, f"the answer names no call_id: {answer}")
    record = await wait_status(client, match.group(0), "done")
    check(len(record["updates"]) == 3, f"updates: {record['updates']}")
    check(record["result"]["text"] == "done after 3 steps", f"result: {record}")

    # A tool with an output schema answered by its first update: the client,
    # which checks answers against listed output schemas, takes it.
    r = await client.call_tool("progress_data", {})
    check(not r.is_error and "step 1 of 1" in text_of(r), f"progress_data: {r}")

    # A tool whose output schema is listed answers with its result, its
    # update arriving as progress.
    seen.clear()
    r = await client.call_tool("update_then_data", {}, progress_callback=on_progress)
    check(not r.is_error and r.structured_content == {"steps": 1}, f"update_then_data: {r}")
    check(seen == [(1.0, "step 1 of 1")], f"update_then_data progress: {seen}")


async def scenario_duplicates(client: Client, args: argparse.Namespace) -> None:
    answers: dict[str, Any] = {}

    async def call(key: str, tool: str, arguments: dict[str, Any]) -> None:
        answers[key] = await client.call_tool(tool, arguments)

    # reject: the second call is not started and names the running one.
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "first", "reject_me", {"ms": 1500})
        first = await wait_running(client, "reject_me")
        tg.start_soon(call, "second", "reject_me", {"ms": 10})
    check(text_of(answers["first"]) == "done", f"first reject_me: {answers['first']}")
    second = answers["second"]
    check(not second.is_error, f"a rejected duplicate is an error: {second}")
    check(first in text_of(second) and "toolhost_cancel_task" in text_of(second), f"reject notice: {text_of(second)}")

    # confirm: not started without confirm_duplicate, started with it.
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "first", "confirm_me", {"ms": 1500})
        first = await wait_running(client, "confirm_me")
        await call("unconfirmed", "confirm_me", {"ms": 10})
        await call("confirmed", "confirm_me", {"ms": 10, "confirm_duplicate": True})
    unconfirmed = text_of(answers["unconfirmed"])
    check(first in unconfirmed and "confirm_duplicate" in unconfirmed, f"confirm notice: {unconfirmed}")
    check(text_of(answers["confirmed"]) == "done", f"confirmed duplicate: {answers['confirmed']}")
    check(text_of(answers["first"]) == "done", f"first confirm_me: {answers['first']}")


async def scenario_cancel(client: Client, args: argparse.Namespace) -> None:
    # The client gives up on an open call: notifications/cancelled (B20-B22).
    async with anyio.create_task_group() as tg:

        async def abandoned() -> None:
            await client.call_tool("wait_cancel", {})

        tg.start_soon(abandoned)
        call_id = await wait_running(client, "wait_cancel")
        tg.cancel_scope.cancel()
    record = await wait_status(client, call_id, "cancelled")
    check(record["result"]["text"] == "cleaned up", f"the plugin did not see cancelled(): {record}")

    # The companion tool cancels a call that is still answering.
    answers: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def waiting() -> None:
            answers["waiting"] = await client.call_tool("wait_cancel", {})

        tg.start_soon(waiting)
        call_id = await wait_running(client, "wait_cancel")
        r = await client.call_tool("toolhost_cancel_task", {"call_id": call_id})
        check(not r.is_error, f"toolhost_cancel_task: {r}")
    check("cancel" in text_of(answers["waiting"]).lower(), f"a cancelled call answers: {answers['waiting']}")

    # B20: a tool that is not cancellable says so.
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "sleep", {"ms": 800})
        call_id = await wait_running(client, "sleep")
        r = await client.call_tool("toolhost_cancel_task", {"call_id": call_id})
        check(bool(r.is_error) and "not cancellable" in text_of(r), f"cancelling sleep: {r}")


async def scenario_task(client: Client, args: argparse.Namespace) -> None:
    created = await client.session.call_tool("progress", {"n": 3, "sleep_ms": 300}, allow_claimed=True)
    check(isinstance(created, CreatedTask), f"not answered with a task: {created}")
    check(created.status == "working" and created.status_message == "step 1 of 3", f"seed task: {created}")
    seen: list[str] = []
    task = await settle(client, created.task_id, seen)
    check(task.status == "completed", f"task: {task}")
    check(task.result["content"][0]["text"] == "done after 3 steps", f"result: {task.result}")
    check("step 2 of 3" in seen or "step 3 of 3" in seen, f"status messages: {seen}")
    # A quick call is answered directly even when tasks are declared.
    r = await client.session.call_tool("ok", {}, allow_claimed=True)
    check(isinstance(r, mcp_types.CallToolResult) and text_of(r) == "ok", f"ok: {r}")


async def scenario_task_restart_start(client: Client, args: argparse.Namespace) -> None:
    # B31: one task that runs on (ten minutes), one that ends; their ids go
    # to the test, which kills the host and asks a new one.
    running = await client.session.call_tool("progress", {"n": 2, "sleep_ms": 600000}, allow_claimed=True)
    check(isinstance(running, CreatedTask), f"not answered with a task: {running}")
    done = await client.session.call_tool("update_then_data", {}, allow_claimed=True)
    check(isinstance(done, CreatedTask), f"not answered with a task: {done}")
    task = await settle(client, done.task_id)
    check(task.status == "completed", f"task: {task}")
    print(f"TASKS {running.task_id} {done.task_id}")


async def scenario_task_restart_read(client: Client, args: argparse.Namespace) -> None:
    running, done = args.task_ids.split(",")
    task = await get_task(client, running)
    check(task.status == "failed", f"a call the host was killed in: {task}")
    check("interrupted" in (task.status_message or ""), f"says why: {task}")
    task = await get_task(client, done)
    check(task.status == "completed", f"a call that ended before: {task}")
    check(task.result["structuredContent"] == {"steps": 1}, f"its result: {task.result}")
    # A guessed id reads nothing.
    try:
        await get_task(client, "00000000-0000-4000-8000-000000000000")
    except Exception as e:  # the SDK raises the JSON-RPC error
        check("task" in str(e).lower(), f"error: {e}")
    else:
        raise Failed("a guessed task id was answered")


async def scenario_task_cancel(client: Client, args: argparse.Namespace) -> None:
    # spin_cancellable never calls the host: it becomes a task after a while,
    # and only the fuel check can stop it (B21).
    created = await client.session.call_tool("spin_cancellable", {}, allow_claimed=True)
    check(isinstance(created, CreatedTask), f"not answered with a task: {created}")
    task = await get_task(client, created.task_id)
    check(task.status == "working", f"before cancel: {task}")
    await cancel_task(client, created.task_id)
    task = await settle(client, created.task_id)
    check(task.status == "cancelled", f"after cancel: {task}")
    # A task of a tool that is not cancellable refuses (B20).
    created = await client.session.call_tool("sleep", {"ms": 1500}, allow_claimed=True)
    check(isinstance(created, CreatedTask), f"sleep not answered with a task: {created}")
    try:
        await cancel_task(client, created.task_id)
        raise Failed("tasks/cancel of a sleep task was accepted")
    except Failed:
        raise
    except Exception as e:  # the SDK raises MCPError for the JSON-RPC error
        check("not cancellable" in str(e), f"refusal: {e}")
    check((await settle(client, created.task_id)).status == "completed", "sleep did not complete")


async def scenario_list_changed(client: Client, args: argparse.Namespace) -> None:
    check(args.folder is not None and args.drop is not None, "--folder and --drop are needed")
    before = {t.name for t in (await client.list_tools()).tools}
    drop = Path(args.drop)

    async def changed_list() -> set[str]:
        # A notification may also come from the folder's first load; wait
        # for one after which the list has grown.
        return {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}

    # Only a notification leads to listing again: without one the
    # scenario fails, whatever the list says.
    after = before
    notifications = 0
    try:
        with anyio.fail_after(20):
            if client.protocol_version < "2026-07-28":
                changed = anyio.Event()
                NOTIFIED[:] = [changed]
                shutil.copy(drop, Path(args.folder) / drop.name)
                while not after > before:
                    await changed.wait()
                    notifications += 1
                    changed = anyio.Event()
                    NOTIFIED[:] = [changed]
                    after = await changed_list()
            else:
                async with client.listen(tools_list_changed=True) as sub:
                    shutil.copy(drop, Path(args.folder) / drop.name)
                    async for _event in sub:
                        notifications += 1
                        after = await changed_list()
                        if after > before:
                            break
    except TimeoutError:
        raise Failed(
            f"{notifications} tools/list_changed notifications in 20 s; new tools: {sorted(after - before)}"
        ) from None
    check(notifications > 0 and after > before, f"no new tools after the change: {sorted(after - before)}")


NOTIFIED: list[anyio.Event] = []


async def on_message(message: Any) -> None:
    root = getattr(message, "root", message)
    if getattr(root, "method", None) == "notifications/tools/list_changed":
        for event in NOTIFIED:
            event.set()


SCENARIOS = {
    name.removeprefix("scenario_").replace("_", "-"): f
    for name, f in globals().items()
    if name.startswith("scenario_")
}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stdio", help="the toolhost binary, served over stdio")
    parser.add_argument("--plugins", help="the plugin folder (with --stdio)")
    parser.add_argument("--url", help="the server's streamable HTTP URL")
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    parser.add_argument("--folder", help="the served folder (list-changed)")
    parser.add_argument("--drop", help="a plugin to drop into the folder (list-changed)")
    parser.add_argument("--task-ids", help="RUNNING,DONE task ids (task-restart-read)")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    if args.stdio:
        server: Any = StdioServerParameters(command=args.stdio, args=["--plugins", args.plugins, "serve"])
    else:
        server = args.url
    # Only the task scenarios declare the tasks extension; without it a
    # released call answers with its first update (B2).
    extensions = [Tasks()] if args.scenario.startswith("task") else []
    async with Client(
        server, mode=args.mode, extensions=extensions, message_handler=on_message, read_timeout_seconds=60
    ) as client:
        version = client.protocol_version
        await SCENARIOS[args.scenario](client, args)
    print(f"ok {args.scenario} ({args.mode}, {version})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(anyio.run(main))
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
