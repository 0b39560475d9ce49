"""The bridge in a real `AgentSession`: real toolhost, real plugins, a scripted model.

Each test scripts the model's turns; a turn may wait on what the session
reports (`tool_execution_updated`) before it answers, which is how a test
holds the agent busy while a tool works, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import SAMPLE
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.events import (
    ToolCallEnded,
    ToolCallUpdated,
    ToolExecutionUpdatedEvent,
    ToolReplyUpdated,
)
from scripted_llm import Call, ScriptedLLM, Script, Seen, Turn

from livekit_toolhost import ToolhostToolset

# Bounds on waiting for a tool; far above what each takes.
CALL_TIMEOUT = 60.0


class Tracker:
    """The session's tool events, and a way to wait for a call's end."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._ended: dict[str, asyncio.Event] = {}

    def on_event(self, ev: ToolExecutionUpdatedEvent) -> None:
        self.events.append(ev.update)
        if isinstance(ev.update, ToolCallEnded):
            self.ended(ev.update.call_id).set()

    def ended(self, call_id: str) -> asyncio.Event:
        return self._ended.setdefault(call_id, asyncio.Event())

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@asynccontextmanager
async def agent_session(
    toolset: ToolhostToolset, script: Script
) -> AsyncIterator[tuple[AgentSession, ScriptedLLM, Tracker]]:
    model = ScriptedLLM(script)
    session = AgentSession(llm=model, tools=[toolset])
    tracker = Tracker()
    session.on("tool_execution_updated", tracker.on_event)
    await session.start(Agent(instructions="You run tools for the user."))
    try:
        yield session, model, tracker
    finally:
        await session.aclose()
    assert model.errors == []


def sample_files() -> int:
    return sum(1 for p in SAMPLE.rglob("*") if p.is_file())


def output(seen: Seen, call_id: str) -> str:
    found = [o.output for o in seen.outputs() if o.call_id == call_id]
    assert found, f"no output for {call_id} in {[o.call_id for o in seen.outputs()]}"
    return found[-1]


async def test_updates_reach_the_agent_then_coalesce_and_the_result_follows(
    toolset: ToolhostToolset,
) -> None:
    files = sample_files()
    tracker_box: list[Tracker] = []
    ended_before_first_reply: list[bool] = []

    async def script(turn: int, seen: Seen) -> Turn:
        if turn == 0:
            return Turn(calls=[Call("index_directory", {"delay_ms": 20})])
        if turn == 1:
            # The first update answered the call: the tool is still running.
            ended = tracker_box[0].ended("call_1")
            ended_before_first_reply.append(ended.is_set())
            # Keep the agent busy until the call ended, so every later update
            # and the result are pending together when it is idle again.
            await asyncio.wait_for(ended.wait(), CALL_TIMEOUT)
            return Turn(text="Indexing started; I will tell you when it is done.")
        return Turn(text="The index is ready.")

    async with agent_session(toolset, script) as (session, model, tracker):
        tracker_box.append(tracker)
        await session.run(user_input="Index my files.")

    assert ended_before_first_reply == [False]
    first = output(model.seen[1], "call_1")
    assert f"indexed 1 of {files} files" in first, first

    # Exactly one more turn: the coalesced reply with every later update and the result.
    assert len(model.seen) == 3, [len(s.outputs()) for s in model.seen]
    reply = model.seen[2]
    later = [o for o in reply.outputs() if o.call_id.startswith("call_1_")]
    assert [o.call_id for o in later] == [f"call_1_update_{n}" for n in range(1, files - 1)] + [
        "call_1_final"
    ]
    for n, update in enumerate(later[:-1], start=1):
        assert f"indexed {n + 1} of {files} files" in update.output, update.output
    assert later[-1].output.startswith(f"Indexed {files} files in /data."), later[-1].output
    assert not later[-1].is_error
    for o in later:
        assert o.call_id in reply.instructions()

    assert len(tracker.of(ToolCallUpdated)) == files - 1
    scheduled = [r for r in tracker.of(ToolReplyUpdated) if r.status == "scheduled"]
    assert len(scheduled) == 1, scheduled
    ends = tracker.of(ToolCallEnded)
    assert [(e.id, e.status) for e in ends] == [("call_1_final", "done")]


async def running_calls(toolset: ToolhostToolset) -> list[dict[str, Any]]:
    answer = await toolset.call_host_tool("toolhost_running_tasks")
    return json.loads(answer)["tasks"]


async def until(check: Any, timeout: float) -> Any:
    """Poll the host until `check()` is truthy; fails after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not (value := await check()):
            await asyncio.sleep(0.05)
        return value


async def test_cancel_task_stops_a_spinning_wasm_tool_by_force(
    stdio_toolset: ToolhostToolset,
) -> None:
    async def script(turn: int, seen: Seen) -> Turn:
        if turn == 0:
            return Turn(calls=[Call("update_then_spin")])
        if turn == 1:
            # The reply to an update may not call tools (LiveKit asks for
            # tool_choice none): the user's next turn asks to stop.
            return Turn(text="It is running.")
        if turn == 2:
            return Turn(calls=[Call("lk_agents_cancel_task", {"call_id": "call_1"})])
        return Turn(text="I stopped it.")

    async def spinning() -> list[dict[str, Any]]:
        calls = await running_calls(stdio_toolset)
        return [t for t in calls if t["tool"] == "update_then_spin"]

    async with agent_session(stdio_toolset, script) as (session, model, tracker):
        await session.run(user_input="Spin.")
        # Released by its update, the plugin now spins without ever calling
        # the host again: only a forced stop can end it.
        [task] = await until(spinning, CALL_TIMEOUT)
        assert task["status"] == "running", task

        await session.run(user_input="Stop it.")
        assert "cancelled successfully" in output(model.seen[3], "call_2")
        ends = [(e.id, e.status) for e in tracker.of(ToolCallEnded) if e.call_id == "call_1"]
        assert ends == [("call_1_final", "cancelled")]

        # toolhost was told (notifications/cancelled) and stopped the plugin.
        async def gone() -> bool:
            return not await spinning()

        await until(gone, CALL_TIMEOUT)
        status = json.loads(
            await stdio_toolset.call_host_tool("toolhost_task_status", {"call_id": task["call_id"]})
        )
        assert status["status"] == "cancelled", status


async def test_a_rejected_duplicate_is_refused(stdio_toolset: ToolhostToolset) -> None:
    tracker_box: list[Tracker] = []
    running_at_refusal: list[list[dict[str, Any]]] = []

    async def script(turn: int, seen: Seen) -> Turn:
        arguments = {"delay_ms": 50}
        if turn == 0:
            # The same call twice in one step: LiveKit runs the first and
            # refuses the second (`reject`, `name_and_args`).
            return Turn(
                calls=[Call("index_directory", arguments), Call("index_directory", arguments)]
            )
        if turn == 1:
            running_at_refusal.append(await running_calls(stdio_toolset))
            await asyncio.wait_for(tracker_box[0].ended("call_1").wait(), CALL_TIMEOUT)
            return Turn(text="It is already running.")
        return Turn(text="Done.")

    async with agent_session(stdio_toolset, script) as (session, model, tracker):
        tracker_box.append(tracker)
        await session.run(user_input="Index the files, twice.")

    refusal = output(model.seen[1], "call_2")
    assert "already running" in refusal and '"call_1"' in refusal, refusal
    # toolhost ran the first call only.
    assert [t["tool"] for t in running_at_refusal[0]] == ["index_directory"]
    assert [(e.id, e.status) for e in tracker.of(ToolCallEnded)] == [("call_1_final", "done")]


async def watch_statuses(toolset: ToolhostToolset, tool: str, want: list[str]) -> list[str]:
    """Poll toolhost until its calls of `tool` have the statuses `want` (in any order)."""

    async def statuses() -> list[str] | None:
        found = sorted(t["status"] for t in await running_calls(toolset) if t["tool"] == tool)
        return found if found == sorted(want) else None

    return await until(statuses, CALL_TIMEOUT)


async def test_a_queued_duplicate_waits_in_toolhost(stdio_toolset: ToolhostToolset) -> None:
    async def script(turn: int, seen: Seen) -> Turn:
        if turn == 0:
            # Two calls in one turn: LiveKit runs them together ("allow").
            return Turn(calls=[Call("queue_me", {"ms": 500}), Call("queue_me", {"ms": 500})])
        return Turn(text="Both are done.")

    async with agent_session(stdio_toolset, script) as (session, model, tracker):
        run = session.run(user_input="Queue two.")
        # toolhost holds the second until the first has ended (B14).
        assert await watch_statuses(stdio_toolset, "queue_me", ["running", "queued"])
        await run

    assert {o.call_id: o.output for o in model.seen[1].outputs()} == {
        "call_1": "done",
        "call_2": "done",
    }


async def test_a_confirmed_duplicate_runs_without_a_second_confirmation(
    stdio_toolset: ToolhostToolset,
) -> None:
    async def script(turn: int, seen: Seen) -> Turn:
        if turn == 0:
            return Turn(
                calls=[
                    Call("confirm_me", {"ms": 500}),
                    # LiveKit's confirmation; toolhost's is sent by the bridge.
                    Call("confirm_me", {"ms": 500, "lk_agents_confirm_duplicate": True}),
                ]
            )
        return Turn(text="Both ran.")

    async with agent_session(stdio_toolset, script) as (session, model, tracker):
        run = session.run(user_input="Run it twice, I confirm.")
        assert await watch_statuses(stdio_toolset, "confirm_me", ["running", "running"])
        await run

    assert {o.call_id: o.output for o in model.seen[1].outputs()} == {
        "call_1": "done",
        "call_2": "done",
    }
