// Write toolhost plugins in JavaScript: the conveniences of the Rust guest
// library over what componentize-js makes of wit/plugin.wit.
//
// A plugin is an ES module that declares its tools with defineTool() and
// re-exports `tool`, the implementation of the WIT interface `tool`:
//
//     import { defineTool, InvalidArguments } from "../js/toolhost.js";
//     export { tool } from "../js/toolhost.js";
//
//     defineTool({
//       name: "hello",
//       description: "Greets someone.",
//       schema: {
//         type: "object",
//         properties: { name: { type: "string" } },
//         required: ["name"],
//       },
//     }, ({ name }) => {
//       if (!name.trim()) throw new InvalidArguments("name must not be blank");
//       return `Hello, ${name}!`;
//     });
//
// A tool function takes the arguments as an object (validated by the host
// against the schema; keys sent as null left out, since clients in OpenAI
// strict mode send null for an optional argument the model did not give;
// top-level defaults from the schema filled in), may be async, and returns what the model reads: a string (text),
// output(text, data) (text and/or structured data), any other JSON value
// (data), or undefined (nothing). Throwing InvalidArguments or Failed
// answers the model with a tool error; any other exception is a crash: the
// model gets a short generic message, and the exception is logged at error
// level.
//
// A top-level `default` fills the argument in, and is declared to the host
// in the property's description instead ("Default: 0."): OpenAI strict mode
// refuses the `default` keyword.

import {
  update as hostUpdate,
  cancelled as hostCancelled,
  log as hostLog,
  callInfo as hostCallInfo,
} from "toolhost:plugin/host@0.1.0";

/** The arguments were unusable; the message is for the model. */
export class InvalidArguments extends Error {}

/** The tool failed; the message is for the model. */
export class Failed extends Error {}

const POLICIES = ["allow", "reject", "replace", "confirm", "queue"];
const SCOPES = ["name", "name-and-arguments"];
const DELIVERIES = ["conversational", "fire-and-forget"];
const LEVELS = ["trace", "debug", "info", "warn", "error"];

function choice(allowed, value, what) {
  if (!allowed.includes(value)) {
    throw new TypeError(`${what} must be one of ${allowed.join(", ")}, not ${value}`);
  }
  return value;
}

const OUTPUT = Symbol("toolhost output");

/** A result with text for the model, structured data (any JSON value), or both. */
export function output(text, data) {
  return { [OUTPUT]: true, text, data };
}

const tools = new Map();

/**
 * Declare a tool. The defaults are those of the Rust library's `spec`:
 * duplicates allowed (by name), not cancellable, conversational delivery.
 * onDuplicate: allow | reject | replace | confirm | queue;
 * duplicateScope: name | name-and-arguments;
 * delivery: conversational | fire-and-forget.
 */
export function defineTool(
  {
    name,
    description,
    schema,
    outputSchema,
    onDuplicate = "allow",
    duplicateScope = "name",
    cancellable = false,
    delivery = "conversational",
  },
  run,
) {
  if (tools.has(name)) throw new TypeError(`tool ${name} is declared twice`);
  const spec = {
    name,
    description,
    inputSchema: JSON.stringify(declared(schema)),
    outputSchema: outputSchema === undefined ? undefined : JSON.stringify(outputSchema),
    onDuplicate: choice(POLICIES, onDuplicate, "onDuplicate"),
    duplicateScope: choice(SCOPES, duplicateScope, "duplicateScope"),
    cancellable,
    delivery: choice(DELIVERIES, delivery, "delivery"),
  };
  tools.set(name, { spec, schema, run });
}

/** Push a progress update into the conversation. The first one answers the
 * call; the tool goes on in the background. */
export function update(message) {
  hostUpdate(String(message));
}

/** True once the call has been asked to stop: clean up and return. */
export function cancelled() {
  return hostCancelled();
}

/** A line in the host's log (trace, debug, info, warn or error), tagged
 * with the plugin, tool and call. */
export function log(message, level = "info") {
  hostLog(choice(LEVELS, level, "level"), String(message));
}

/** This call's { callId, sessionId, tool }. */
export function callInfo() {
  return hostCallInfo();
}

/** Resolves after `ms` milliseconds (a WASI clock wait). */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The schema the host gets: each top-level `default` said in its
 * property's description rather than as a keyword strict mode refuses. */
function declared(schema) {
  const properties = schema.properties;
  if (!properties || typeof properties !== "object") return schema;
  const out = {};
  for (const [key, prop] of Object.entries(properties)) {
    if (prop && typeof prop === "object" && "default" in prop) {
      const { default: value, ...rest } = prop;
      const said = `Default: ${JSON.stringify(value)}.`;
      const text = (rest.description ?? "").trimEnd();
      out[key] = { ...rest, description: text ? `${text} ${said}` : said };
    } else {
      out[key] = prop;
    }
  }
  return { ...schema, properties: out };
}

/** `value` with every null-valued key of every object left out. */
function absentNulls(value) {
  if (Array.isArray(value)) return value.map(absentNulls);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== null)
        .map(([k, v]) => [k, absentNulls(v)]),
    );
  }
  return value;
}

function withDefaults(args, schema) {
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    if (!(key in args) && prop && typeof prop === "object" && "default" in prop) {
      args[key] = prop.default;
    }
  }
  return args;
}

function toOutput(result) {
  if (result === undefined || result === null) return { text: undefined, data: undefined };
  if (typeof result === "string") return { text: result, data: undefined };
  if (result[OUTPUT]) {
    return {
      text: result.text ?? undefined,
      data: result.data === undefined ? undefined : JSON.stringify(result.data),
    };
  }
  return { text: undefined, data: JSON.stringify(result) };
}

// componentize-js turns a thrown { tag, val } into the `err` case of the
// result, and anything else into a trap.
function toolError(tag, message) {
  return { tag, val: message };
}

/** The WIT interface `tool`, assembled from the defineTool() declarations. */
export const tool = {
  describe() {
    return [...tools.values()].map((t) => t.spec);
  },

  async call(name, argumentsJson) {
    const entry = tools.get(name);
    if (!entry) throw toolError("failed", `no tool named ${name}`);
    let args;
    try {
      args = JSON.parse(argumentsJson);
    } catch (e) {
      throw toolError("invalid-arguments", `arguments are not JSON: ${e.message}`);
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw toolError("invalid-arguments", "arguments must be a JSON object");
    }
    let result;
    try {
      result = await entry.run(withDefaults(absentNulls(args), entry.schema));
    } catch (e) {
      if (e instanceof InvalidArguments) throw toolError("invalid-arguments", e.message);
      if (e instanceof Failed) throw toolError("failed", e.message);
      // A bug, not an answer: the host turns the trap into a generic message
      // for the model; the operator reads the stack here.
      hostLog("error", e instanceof Error ? `${e}\n${e.stack ?? ""}` : `uncaught ${String(e)}`);
      throw e;
    }
    return toOutput(result);
  },
};
