"""A tool's behaviour as toolhost lists it, and the LiveKit options it maps to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from livekit.agents.llm import ToolFlag
from livekit.agents.llm.mcp import MCPToolOptions

logger = logging.getLogger("livekit_toolhost")

BEHAVIOUR_KEY = "dev.toolhost/behaviour"
"""The key of a tool's `_meta` in `tools/list` that holds its behaviour."""

ANSWER_KEY = "dev.toolhost/answer"
"""The `_meta` key of a `tools/call` that chooses toolhost's answer mode."""

COMPANION_TOOLS = frozenset(
    {"toolhost_running_tasks", "toolhost_task_status", "toolhost_cancel_task"}
)
"""toolhost's task tools (B25); LiveKit has its own, so the toolset leaves these out."""

CONFIRM_ARGUMENT = "confirm_duplicate"
"""The argument toolhost adds to `confirm` tools (B12); LiveKit asks the model instead."""

# toolhost's policy -> LiveKit's. `queue` has no LiveKit counterpart: LiveKit
# lets every call through and toolhost holds the duplicate until its turn.
_ON_DUPLICATE = {
    "allow": "allow",
    "reject": "reject",
    "replace": "replace",
    "confirm": "confirm",
    "queue": "allow",
}
_SCOPE = {"name": "name", "name-and-arguments": "name_and_args"}
_DELIVERY = ("conversational", "fire-and-forget")


@dataclass(frozen=True)
class Behaviour:
    """What toolhost does with a call of one tool (its `_meta` entry).

    Defaults are those of a tool whose host lists no behaviour: `allow`,
    `name`, not cancellable, `conversational`.
    """

    on_duplicate: str = "allow"
    duplicate_scope: str = "name"
    cancellable: bool = False
    delivery: str = "conversational"

    @classmethod
    def from_meta(cls, tool: str, meta: Any) -> Behaviour | None:
        """The behaviour in a tool's `_meta`, or None when the host lists none.

        A value this version does not know is logged and read as the default:
        toolhost enforces its own policy whatever LiveKit is told, so the call
        still behaves; only LiveKit's view of it is coarser.
        """
        if not isinstance(meta, dict) or not isinstance(meta.get(BEHAVIOUR_KEY), dict):
            return None
        raw: dict[str, Any] = meta[BEHAVIOUR_KEY]
        default = cls()

        def pick(field: str, allowed: Any, fallback: Any) -> Any:
            value = raw.get(field, fallback)
            # a bool for a bool, a known name for a name: 1 is not True here
            if type(value) is type(fallback) and value in allowed:
                return value
            logger.warning(
                "toolhost tool %s: unknown %s %r, read as %r", tool, field, value, fallback
            )
            return fallback

        return cls(
            on_duplicate=pick("on_duplicate", _ON_DUPLICATE, default.on_duplicate),
            duplicate_scope=pick("duplicate_scope", _SCOPE, default.duplicate_scope),
            cancellable=pick("cancellable", (True, False), default.cancellable) is True,
            delivery=pick("delivery", _DELIVERY, default.delivery),
        )


def tool_options(behaviour: Behaviour) -> MCPToolOptions:
    """The LiveKit options of a tool with `behaviour`.

    Progress is always reported: with `--answer final` toolhost sends every
    update as `notifications/progress`, and a tool that sends none simply
    answers with its result.
    """
    return MCPToolOptions(
        flags=ToolFlag.CANCELLABLE if behaviour.cancellable else ToolFlag.NONE,
        on_duplicate=_ON_DUPLICATE[behaviour.on_duplicate],  # type: ignore[typeddict-item]
        duplicate_scope=_SCOPE[behaviour.duplicate_scope],  # type: ignore[typeddict-item]
        report_progress=True,
    )
