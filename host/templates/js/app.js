// {folder}: a toolhost plugin. `{tool}` counts the words in each line of
// a text, reporting progress and stopping early when cancelled. Replace it
// with your own tools; plugins/README.md in the checkout shows the rest.
//
// tools/build-plugins builds this file beside the helper module, which it
// imports as ../js/toolhost.js wherever this folder is.

import { InvalidArguments, cancelled, defineTool, output, sleep, update } from "../js/toolhost.js";

export { tool } from "../js/toolhost.js";

// At most about this many progress updates per call.
const MAX_UPDATES = 10;

defineTool(
  {
    name: "{tool}",
    description: "Counts the words in each line of `text`, reporting progress as it goes.",
    schema: {
      type: "object",
      properties: {
        text: { type: "string", description: "The text to count, line by line." },
        delay_ms: {
          // Optional: null (which strict-mode clients send) means left out.
          type: ["integer", "null"],
          minimum: 0,
          maximum: 1000,
          default: 0,
          description: "A pause after each line, in milliseconds, to watch the progress.",
        },
      },
      required: ["text"],
    },
    cancellable: true,
  },
  async ({ text, delay_ms }) => {
    if (!text.trim()) throw new InvalidArguments("text must not be blank");
    const lines = text.split("\n");
    const every = Math.max(1, Math.floor(lines.length / MAX_UPDATES));
    let words = 0;
    for (const [done, line] of lines.entries()) {
      if (cancelled()) {
        return output(`cancelled after ${done} of ${lines.length} lines: ${words} words so far`, {
          words,
          lines: done,
        });
      }
      words += line.split(/\s+/).filter((word) => word !== "").length;
      if ((done + 1) % every === 0) update(`line ${done + 1} of ${lines.length}: ${words} words so far`);
      if (delay_ms > 0) await sleep(delay_ms);
    }
    return output(`${words} words in ${lines.length} lines`, { words, lines: lines.length });
  },
);
