// Test plugin: the JavaScript helper module's conveniences, one tool each.
// The tool names and answers match python-behave and c-behave, so the tests
// in tests/languages.rs run the same checks on every language.

import {
  Failed,
  InvalidArguments,
  callInfo,
  cancelled,
  defineTool,
  log,
  output,
  sleep,
  update,
} from "../../../plugins/js/toolhost.js";

export { tool } from "../../../plugins/js/toolhost.js";

const NO_ARGS = { type: "object" };

defineTool(
  {
    name: "word_count",
    description:
      "Counts the words, lines and characters of a text (the trivial tool of the benchmarks).",
    schema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  },
  ({ text }) => {
    const words = text.split(/\s+/).filter((w) => w !== "").length;
    const lines = text === "" ? 0 : text.replace(/\r?\n$/, "").split(/\r?\n/).length;
    const chars = [...text].length;
    return output(`${words} words, ${lines} lines, ${chars} characters`, { words, lines, chars });
  },
);

defineTool({ name: "fail", description: "Fails with a tool error.", schema: NO_ARGS }, () => {
  throw new Failed("it failed on purpose");
});

defineTool(
  {
    name: "bad_args",
    description: "Refuses an odd n as invalid arguments.",
    schema: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] },
  },
  ({ n }) => {
    if (n % 2 !== 0) throw new InvalidArguments("n must be even");
    return `${n} is even`;
  },
);

defineTool(
  { name: "crash", description: "Throws an exception the helper does not know.", schema: NO_ARGS },
  () => {
    throw new RangeError("out of range on purpose");
  },
);

defineTool(
  {
    name: "progress",
    description: "Sends n updates, sleeping between them, then returns.",
    schema: {
      type: "object",
      properties: {
        n: { type: "integer", minimum: 1 },
        sleep_ms: { type: "integer", minimum: 0, default: 0 },
      },
      required: ["n"],
    },
    cancellable: true,
  },
  async ({ n, sleep_ms }) => {
    for (let i = 1; i <= n; i++) {
      if (cancelled()) return `cancelled after ${i - 1} steps`;
      update(`step ${i} of ${n}`);
      if (i < n && sleep_ms > 0) await sleep(sleep_ms);
    }
    return `done after ${n} steps`;
  },
);

defineTool(
  {
    name: "wait_cancel",
    description: "Waits until the call is cancelled.",
    schema: NO_ARGS,
    cancellable: true,
  },
  async () => {
    update("waiting for cancel");
    while (!cancelled()) await sleep(5);
    return "stopped on cancel";
  },
);

defineTool(
  { name: "info", description: "Returns callInfo() and logs a line.", schema: NO_ARGS },
  () => {
    const { callId, sessionId, tool } = callInfo();
    log(`info called as ${callId}`, "warn");
    return { call_id: callId, session_id: sessionId, tool };
  },
);
