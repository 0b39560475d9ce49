"""toolhost's WebAssembly tools as a LiveKit Agents toolset.

`ToolhostToolset` is an `MCPToolset` that starts `toolhost serve --answer
final` over stdio (or connects to a running one over streamable HTTP; each
call asks for the `final` mode itself) and configures every tool from the
behaviour toolhost lists for it:

- cancellable tools get `ToolFlag.CANCELLABLE`, so `lk_agents_cancel_task`
  can stop them (toolhost then stops the plugin, by force after its grace
  period if it does not look);
- `on_duplicate` and `duplicate_scope` become LiveKit's own, except `queue`,
  which LiveKit lacks: such tools are `allow` in LiveKit and toolhost queues
  the call and answers when it has run;
- every update of a call reaches the agent through `ctx.update()` (the first
  one answers the model at once, LiveKit coalesces the rest into a reply),
  and the call's final result follows.

toolhost's companion tools (`toolhost_running_tasks`, ...) are not exposed:
LiveKit has its own `lk_agents_get_running_tasks` and `lk_agents_cancel_task`.

    from livekit.agents import AgentSession
    from livekit_toolhost import ToolhostToolset

    session = AgentSession(llm=..., tools=[ToolhostToolset.stdio("dist/plugins")])
"""

from __future__ import annotations

from ._behaviour import (
    ANSWER_KEY,
    BEHAVIOUR_KEY,
    COMPANION_TOOLS,
    Behaviour,
    tool_options,
)
from ._toolset import DEFAULT_CONNECT_TIMEOUT, ToolhostError, ToolhostToolset, text_result

__all__ = [
    "ANSWER_KEY",
    "BEHAVIOUR_KEY",
    "COMPANION_TOOLS",
    "DEFAULT_CONNECT_TIMEOUT",
    "Behaviour",
    "ToolhostError",
    "ToolhostToolset",
    "text_result",
    "tool_options",
]
