"""A LiveKit voice agent whose tools are toolhost's WebAssembly plugins.

    TOOLHOST_PLUGINS=/path/to/toolhost/dist/plugins python agent.py dev

Needs `toolhost` on PATH (or TOOLHOST_BIN), and LIVEKIT_URL, LIVEKIT_API_KEY
and LIVEKIT_API_SECRET for the room and LiveKit Inference (STT, LLM, TTS).
"""

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli, inference

from livekit_toolhost import ToolhostToolset

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    # One toolhost per conversation: `toolhost serve --answer final` on stdio.
    # Long tools (index_directory) answer with their first update at once and
    # LiveKit voices the later ones and the result when the agent is free.
    tools = ToolhostToolset.stdio(os.environ.get("TOOLHOST_PLUGINS", "dist/plugins"))
    session = AgentSession(
        stt=inference.STT("deepgram/nova-3"),
        llm=inference.LLM("openai/gpt-4.1-mini"),
        tts=inference.TTS("cartesia/sonic-3"),
        tools=[tools],
    )
    await session.start(
        agent=Agent(
            instructions=(
                "You are a helpful voice assistant. Use your tools; when one is still "
                "running, say so and carry on, and never guess its result."
            )
        ),
        room=ctx.room,
    )


if __name__ == "__main__":
    cli.run_app(server)
