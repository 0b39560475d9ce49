"""Reading toolhost's behaviour and mapping it to LiveKit's tool options."""

from __future__ import annotations

import pytest
from livekit.agents.llm import ToolFlag

from livekit_toolhost import (
    BEHAVIOUR_KEY,
    COMPANION_TOOLS,
    Behaviour,
    ToolhostToolset,
    tool_options,
)


def meta(**behaviour: object) -> dict[str, object]:
    return {BEHAVIOUR_KEY: behaviour}


def test_no_behaviour_key_is_none() -> None:
    assert Behaviour.from_meta("t", None) is None
    assert Behaviour.from_meta("t", {"other": 1}) is None
    assert Behaviour.from_meta("t", {BEHAVIOUR_KEY: "reject"}) is None


def test_listed_behaviour_is_read() -> None:
    listed = meta(
        on_duplicate="reject",
        duplicate_scope="name-and-arguments",
        cancellable=True,
        delivery="fire-and-forget",
    )
    assert Behaviour.from_meta("t", listed) == Behaviour(
        "reject", "name-and-arguments", True, "fire-and-forget"
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("on_duplicate", "retry"),
        ("duplicate_scope", "name_and_args"),
        ("cancellable", 1),
        ("cancellable", "true"),
        ("delivery", ["conversational"]),
    ],
)
def test_unknown_values_read_as_the_default(field: str, value: object) -> None:
    assert Behaviour.from_meta("t", meta(**{field: value})) == Behaviour()


@pytest.mark.parametrize(
    "on_duplicate,livekit",
    [
        ("allow", "allow"),
        ("reject", "reject"),
        ("replace", "replace"),
        ("confirm", "confirm"),
        # LiveKit has no queue: it lets the call through and toolhost queues it.
        ("queue", "allow"),
    ],
)
def test_on_duplicate_maps_to_livekit(on_duplicate: str, livekit: str) -> None:
    assert tool_options(Behaviour(on_duplicate=on_duplicate))["on_duplicate"] == livekit


def test_scope_flags_and_progress_map_to_livekit() -> None:
    options = tool_options(Behaviour(duplicate_scope="name-and-arguments", cancellable=True))
    assert options["duplicate_scope"] == "name_and_args"
    assert options["flags"] == ToolFlag.CANCELLABLE
    assert options["report_progress"] is True
    plain = tool_options(Behaviour())
    assert (plain["duplicate_scope"], plain["flags"]) == ("name", ToolFlag.NONE)


async def test_tools_carry_the_behaviour_toolhost_lists(stdio_toolset: ToolhostToolset) -> None:
    await stdio_toolset.setup()
    tools = {tool.info.name: tool.info for tool in stdio_toolset.tools}

    assert not COMPANION_TOOLS & tools.keys()
    indexer = tools["index_directory"]
    assert ToolFlag.CANCELLABLE in indexer.flags
    assert (indexer.on_duplicate, indexer.duplicate_scope) == ("reject", "name_and_args")
    assert tools["queue_me"].on_duplicate == "allow"
    assert stdio_toolset.behaviours["queue_me"].on_duplicate == "queue"
    assert ToolFlag.CANCELLABLE in tools["spin_cancellable"].flags
    assert (tools["ok"].flags, tools["ok"].on_duplicate) == (ToolFlag.NONE, "allow")
    # toolhost's own confirm argument is hidden; LiveKit asks the model instead.
    confirm = tools["confirm_me"]
    assert confirm.on_duplicate == "confirm"
    assert "confirm_duplicate" not in confirm.raw_schema["parameters"].get("properties", {})
