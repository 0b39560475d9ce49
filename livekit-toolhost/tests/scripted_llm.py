"""An `llm.LLM` that answers from a script, so an `AgentSession` runs without a network.

Each `chat()` hands the script a copy of the conversation and the tools;
the script returns the turn: text, tool calls, or both. The LLM keeps every
conversation it was shown, so a test can check what the model saw and how
many turns it took.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)


@dataclass
class Call:
    """A tool call the model makes."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    """One answer of the model."""

    text: str = ""
    calls: list[Call] = field(default_factory=list)


@dataclass
class Seen:
    """What the model was shown for one turn."""

    chat_ctx: llm.ChatContext
    tools: list[llm.Tool]
    tool_choice: llm.ToolChoice | None = None
    """`"none"` when the model may not call tools, as in LiveKit's reply to an update."""

    def outputs(self) -> list[llm.FunctionCallOutput]:
        return [item for item in self.chat_ctx.items if item.type == "function_call_output"]

    def instructions(self) -> str:
        """The text of the system and developer messages, where reply instructions go."""
        return "\n".join(
            item.text_content or ""
            for item in self.chat_ctx.items
            if item.type == "message" and item.role in ("system", "developer")
        )


Script = Callable[[int, Seen], Awaitable[Turn]]


class ScriptedLLM(llm.LLM):
    def __init__(self, script: Script) -> None:
        super().__init__()
        self._script = script
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        """Turns the script got wrong; a test checks that there are none."""
        self._ids = itertools.count(1)

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        seen = Seen(
            chat_ctx=chat_ctx.copy(),
            tools=list(tools or []),
            tool_choice=tool_choice if isinstance(tool_choice, (str, dict)) else None,
        )
        self.seen.append(seen)
        return _Stream(self, seen=seen, turn=len(self.seen) - 1, conn_options=conn_options)


class _Stream(llm.LLMStream):
    def __init__(
        self, owner: ScriptedLLM, *, seen: Seen, turn: int, conn_options: APIConnectOptions
    ) -> None:
        super().__init__(owner, chat_ctx=seen.chat_ctx, tools=seen.tools, conn_options=conn_options)
        self._owner = owner
        self._seen = seen
        self._turn = turn

    async def _run(self) -> None:
        answer = await self._owner._script(self._turn, self._seen)
        # A real model cannot call tools when told not to; a script must not either.
        if answer.calls and self._seen.tool_choice == "none":
            self._owner.errors.append(f"turn {self._turn} calls tools under tool_choice none")
        request = f"scripted-{self._turn}"
        calls = [
            llm.FunctionToolCall(
                name=call.name,
                arguments=json.dumps(call.arguments),
                call_id=f"call_{next(self._owner._ids)}",
            )
            for call in answer.calls
        ]
        if answer.text:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request, delta=llm.ChoiceDelta(role="assistant", content=answer.text)
                )
            )
        if calls:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request, delta=llm.ChoiceDelta(role="assistant", tool_calls=calls)
                )
            )
