// Drive `toolhost serve --answer final` over stdio, or a server already
// listening over streamable HTTP, with the TypeScript MCP SDK
// (@modelcontextprotocol/sdk) and check that a background tool's updates
// arrive as progress, then its final result. Run by tests/clients.rs; exits
// non-zero with the reason when the server does not behave.
//
//     node ts-client.mjs TOOLHOST_BIN PLUGIN_DIR
//     node ts-client.mjs --url URL

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const STEPS = 3;
const FINAL = `done after ${STEPS} steps`;
// A call answers within this, or the client is stuck.
const CALL_TIMEOUT_MS = 60_000;

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function main() {
  const [first, second] = process.argv.slice(2);
  check(first && second, "usage: node ts-client.mjs TOOLHOST_BIN PLUGIN_DIR | --url URL");
  const transport =
    first === "--url"
      ? new StreamableHTTPClientTransport(new URL(second))
      : new StdioClientTransport({
          command: first,
          args: ["--plugins", second, "serve", "--answer", "final"],
          env: { ...process.env },
          stderr: "inherit",
        });
  const client = new Client({ name: "toolhost-tests", version: "0.0.0" });
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    check(
      ["progress", "data", "toolhost_cancel_task"].every((n) => names.includes(n)),
      `tools listed: ${names.join(", ")}`,
    );
    const progress = [];
    const result = await client.callTool(
      { name: "progress", arguments: { n: STEPS, sleep_ms: 50 } },
      undefined,
      { onprogress: (p) => progress.push(p), timeout: CALL_TIMEOUT_MS },
    );
    const text = result.content
      .filter((c) => c.type === "text")
      .map((c) => c.text)
      .join("\n");
    const seen = JSON.stringify(progress);
    check(text === FINAL, `the answer is not the final result: ${JSON.stringify(text)} (progress: ${seen})`);
    check(progress.length === STEPS, `expected ${STEPS} progress notifications, got ${seen}`);
    progress.forEach((p, i) => {
      check(
        (p.message ?? "").includes(`step ${i + 1} of ${STEPS}`),
        `progress messages out of order or missing: ${seen}`,
      );
    });
  } finally {
    await client.close();
  }
  console.log("ok typescript");
}

main().catch((error) => {
  console.error(`FAILED typescript: ${error.message ?? error}`);
  process.exit(1);
});
