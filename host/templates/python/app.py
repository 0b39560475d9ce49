"""{folder}: a toolhost plugin. ``{tool}`` counts the words in each line
of a text, reporting progress and stopping early when cancelled. Replace it
with your own tools; ``plugins/README.md`` in the checkout shows the rest.

componentize-py keeps only the modules imported while it builds the
component: import what a tool needs here, at the top.
"""

import time

from toolhost_plugin import (
    InvalidArguments,
    Output,
    Tool,  # noqa: F401 (componentize-py exports it)
    cancelled,
    tool,
    update,
)

# At most about this many progress updates per call.
MAX_UPDATES = 10


@tool(
    "{tool}",
    "Counts the words in each line of `text`, reporting progress as it goes.",
    {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "The text to count, line by line."},
            "delay_ms": {
                # Optional: null (which strict-mode clients send) means left out.
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 1000,
                "default": 0,
                "description": "A pause after each line, in milliseconds, to watch the progress.",
            },
        },
        "required": ["text"],
    },
    cancellable=True,
)
def count_words(args):
    if not args["text"].strip():
        raise InvalidArguments("text must not be blank")
    lines = args["text"].split("\n")
    every = max(1, len(lines) // MAX_UPDATES)
    words = 0
    for done, line in enumerate(lines):
        if cancelled():
            return Output(
                f"cancelled after {done} of {len(lines)} lines: {words} words so far",
                {"words": words, "lines": done},
            )
        words += len(line.split())
        if (done + 1) % every == 0:
            update(f"line {done + 1} of {len(lines)}: {words} words so far")
        time.sleep(args["delay_ms"] / 1000)
    return Output(f"{words} words in {len(lines)} lines", {"words": words, "lines": len(lines)})
