"""Check tool schemas with the strict-mode conversions real agent clients run.

Reads a JSON list of OpenAI-format tools, as `toolhost schema --format
openai` prints them (`[{"type": "function", "function": {"name",
"description", "parameters"}}]`), from the file named on the command line or
from standard input, and puts every tool's `parameters` through:

- openai-agents: `agents.strict_schema.ensure_strict_json_schema`, called as
  its MCP integration calls it (`MCPUtil.to_function_tool` with
  `convert_schemas_to_strict=True`): an exception there means the tool
  silently falls back to a non-strict schema;
- pydantic-ai: `OpenAIJsonSchemaTransformer` with `strict=None`, the check
  that decides whether a tool is sent as strict (`is_strict_compatible`).
  pydantic-ai sends as strict only a schema already in strict form, every
  property required; a tool with optional arguments is sent non-strict and
  works. That alone is a note, not a failure: the check fails a tool only
  if pydantic-ai would refuse it even with every property required (a
  keyword, a format, an open object);
- the meaning of optional arguments: a strict schema makes every property
  required, so each argument the tool's schema leaves optional must accept
  `null` once converted, or the model can no longer leave it out.

Prints one line per tool and exits 1 naming every tool that fails one of
them, 2 on unusable input.

    toolhost schema --format openai --plugins dist/plugins \\
        | target/mcp-venv/bin/python tests/mcp/strict_check.py
"""

import copy
import inspect
import json
import sys

import jsonschema
from agents.strict_schema import ensure_strict_json_schema
from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer

# Input larger than this is refused rather than read: a tool list is a few
# hundred KiB at most.
MAX_INPUT_BYTES = 16 << 20


def openai_agents_strict(parameters: dict) -> dict:
    """The strict schema openai-agents sends for an MCP tool with these
    parameters; raises where it would fall back to non-strict."""
    schema = copy.deepcopy(parameters)
    empty = schema == {}
    # As MCPUtil.to_function_tool: MCP does not require `properties`.
    schema.setdefault("properties", {})
    if "_reject_open_objects" in inspect.signature(ensure_strict_json_schema).parameters:
        return ensure_strict_json_schema(schema, _reject_open_objects=not empty)
    return ensure_strict_json_schema(schema)


def pydantic_ai_strict_compatible(parameters: dict) -> bool:
    transformer = OpenAIJsonSchemaTransformer(copy.deepcopy(parameters), strict=None)
    transformer.walk()
    return transformer.is_strict_compatible


def all_required(schema):
    """`schema` with every object that has a `required` list requiring all
    its properties (an object without one stays without: pydantic-ai wants
    it even when empty)."""
    if isinstance(schema, list):
        return [all_required(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: all_required(v) for k, v in schema.items()}
    if isinstance(out.get("properties"), dict) and "required" in out:
        out["required"] = list(out["properties"])
    return out


def optional_arguments_lost(parameters: dict, strict: dict) -> list[str]:
    """The optional top-level arguments the strict schema no longer lets
    the model leave out (it refuses `null` for them)."""
    required = set(parameters.get("required", []))
    defs = {k: strict[k] for k in ("$defs", "definitions") if k in strict}
    lost = []
    for name in parameters.get("properties", {}):
        if name in required:
            continue
        prop = strict.get("properties", {}).get(name)
        if not isinstance(prop, dict):
            continue
        if not jsonschema.Draft202012Validator({**defs, **prop}).is_valid(None):
            lost.append(name)
    return lost


def check(tool: dict) -> tuple[list[str], list[str]]:
    """What is wrong with one tool, and notes; both empty if nothing."""
    parameters = tool.get("function", {}).get("parameters", {})
    if not isinstance(parameters, dict):
        return ["parameters is not an object"], []
    problems, notes = [], []
    try:
        strict = openai_agents_strict(parameters)
        jsonschema.Draft202012Validator.check_schema(strict)
    except Exception as e:  # noqa: BLE001 (any failure is a fallback there)
        problems.append(f"openai-agents falls back to non-strict: {e}")
    else:
        lost = optional_arguments_lost(parameters, strict)
        if lost:
            problems.append(
                "openai-agents' strict schema makes optional arguments required "
                f"and not nullable: {', '.join(lost)}"
            )
    try:
        if not pydantic_ai_strict_compatible(parameters):
            if pydantic_ai_strict_compatible(all_required(parameters)):
                notes.append("pydantic-ai sends it non-strict: it has optional arguments")
            else:
                problems.append("pydantic-ai marks it non-strict")
    except Exception as e:  # noqa: BLE001
        problems.append(f"pydantic-ai refuses it: {e}")
    return problems, notes


def main() -> int:
    try:
        source = open(sys.argv[1], "rb") if len(sys.argv) > 1 else sys.stdin.buffer
        with source:
            raw = source.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        print(f"cannot read the tool list: {e}", file=sys.stderr)
        return 2
    if len(raw) > MAX_INPUT_BYTES:
        print(f"input larger than {MAX_INPUT_BYTES} bytes", file=sys.stderr)
        return 2
    try:
        tools = json.loads(raw)
    except ValueError as e:
        print(f"input is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        print("input is not a list of OpenAI-format tools", file=sys.stderr)
        return 2
    failed = []
    for tool in tools:
        name = tool.get("function", {}).get("name", "?")
        problems, notes = check(tool)
        if problems:
            failed.append(name)
            for p in problems:
                print(f"FAIL {name}: {p}")
        else:
            print(f"ok   {name}")
        for n in notes:
            print(f"note {name}: {n}")
    print(f"{len(tools) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print(f"not strict: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
