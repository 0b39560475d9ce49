"""Test plugin: the Python helper module's conveniences, one tool each. The
tool names and answers match js-behave and c-behave, so the tests in
tests/languages.rs run the same checks on every language."""

import time

from toolhost_plugin import (
    Failed,
    InvalidArguments,
    Output,
    Tool,  # noqa: F401 (componentize-py exports it)
    call_info,
    cancelled,
    log,
    tool,
    update,
)

NO_ARGS = {"type": "object"}


@tool(
    "word_count",
    "Counts the words, lines and characters of a text (the trivial tool of the benchmarks).",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
def word_count(args):
    text = args["text"]
    words, lines, chars = len(text.split()), len(text.splitlines()), len(text)
    return Output(
        f"{words} words, {lines} lines, {chars} characters",
        {"words": words, "lines": lines, "chars": chars},
    )


@tool("fail", "Fails with a tool error.", NO_ARGS)
def fail(args):
    raise Failed("it failed on purpose")


@tool(
    "bad_args",
    "Refuses an odd n as invalid arguments.",
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)
def bad_args(args):
    if args["n"] % 2:
        raise InvalidArguments("n must be even")
    return f"{args['n']} is even"


@tool("crash", "Raises an exception the helper does not know.", NO_ARGS)
def crash(args):
    return 1 // 0


@tool(
    "progress",
    "Sends n updates, sleeping between them, then returns.",
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1},
            "sleep_ms": {"type": "integer", "minimum": 0, "default": 0},
        },
        "required": ["n"],
    },
    cancellable=True,
)
def progress(args):
    n = args["n"]
    for i in range(1, n + 1):
        if cancelled():
            return f"cancelled after {i - 1} steps"
        update(f"step {i} of {n}")
        if i < n:
            time.sleep(args["sleep_ms"] / 1000)
    return f"done after {n} steps"


@tool("wait_cancel", "Waits until the call is cancelled.", NO_ARGS, cancellable=True)
def wait_cancel(args):
    update("waiting for cancel")
    while not cancelled():
        time.sleep(0.005)
    return "stopped on cancel"


@tool("info", "Returns call_info() and logs a line.", NO_ARGS)
def info(args):
    ctx = call_info()
    log(f"info called as {ctx.call_id}", "warn")
    return {"call_id": ctx.call_id, "session_id": ctx.session_id, "tool": ctx.tool}
