"""Write toolhost plugins in Python: the conveniences of the Rust guest
library over the bindings that componentize-py generates from
wit/plugin.wit.

A plugin is a module that declares its tools with ``@tool`` and re-exports
``Tool``, the class componentize-py looks for::

    from toolhost_plugin import Tool, tool, update, cancelled, InvalidArguments

    @tool("hello", "Greets someone.", {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    })
    def hello(args):
        if not args["name"].strip():
            raise InvalidArguments("name must not be blank")
        return f"Hello, {args['name']}!"

A tool function takes the arguments as a dict (already validated by the
host against the schema; keys sent as ``null`` left out, since clients in
OpenAI strict mode send ``null`` for an optional argument the model did not
give; top-level defaults from the schema filled in) and returns what the
model reads:

- a ``str``: text;
- ``Output(text=..., data=...)``: text and/or structured data;
- any other JSON value (dict, list, number, bool): data;
- ``None``: nothing.

A top-level ``default`` fills the argument in, and is declared to the host
in the property's description instead ("Default: 0."): OpenAI strict mode
refuses the ``default`` keyword.

``raise InvalidArguments(msg)`` or ``raise Failed(msg)`` answers the model
with a tool error. Any other exception is a crash: the model gets a short
generic message, and the traceback is logged at error level.
"""

import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

__all__ = [
    "Tool",
    "tool",
    "Output",
    "InvalidArguments",
    "Failed",
    "update",
    "cancelled",
    "log",
    "call_info",
]

_POLICIES = {
    "allow": types.DuplicatePolicy.ALLOW,
    "reject": types.DuplicatePolicy.REJECT,
    "replace": types.DuplicatePolicy.REPLACE,
    "confirm": types.DuplicatePolicy.CONFIRM,
    "queue": types.DuplicatePolicy.QUEUE,
}
_SCOPES = {
    "name": types.DuplicateScope.NAME,
    "name-and-arguments": types.DuplicateScope.NAME_AND_ARGUMENTS,
}
_DELIVERIES = {
    "conversational": types.Delivery.CONVERSATIONAL,
    "fire-and-forget": types.Delivery.FIRE_AND_FORGET,
}
_LEVELS = {
    "trace": types.LogLevel.TRACE,
    "debug": types.LogLevel.DEBUG,
    "info": types.LogLevel.INFO,
    "warn": types.LogLevel.WARN,
    "error": types.LogLevel.ERROR,
}


class InvalidArguments(Exception):
    """The arguments were unusable; the message is for the model."""


class Failed(Exception):
    """The tool failed; the message is for the model."""


@dataclass
class Output:
    """A result with text for the model, structured data (any JSON value), or both."""

    text: Optional[str] = None
    data: Any = None


@dataclass
class _Entry:
    spec: types.ToolSpec
    schema: dict
    run: Callable[[dict], Any]


_tools: dict[str, _Entry] = {}


def _choice(table: dict, value: str, what: str):
    if value not in table:
        raise ValueError(f"{what} must be one of {', '.join(table)}, not {value!r}")
    return table[value]


def tool(
    name: str,
    description: str,
    schema: dict,
    *,
    output_schema: Optional[dict] = None,
    on_duplicate: str = "allow",
    duplicate_scope: str = "name",
    cancellable: bool = False,
    delivery: str = "conversational",
):
    """Declare the decorated function as the tool ``name``.

    The defaults are those of the Rust library's ``spec``: duplicates
    allowed (by name), not cancellable, conversational delivery.
    ``on_duplicate`` is one of allow, reject, replace, confirm, queue;
    ``duplicate_scope`` name or name-and-arguments; ``delivery``
    conversational or fire-and-forget.
    """
    spec = types.ToolSpec(
        name=name,
        description=description,
        input_schema=json.dumps(_declared(schema)),
        output_schema=None if output_schema is None else json.dumps(output_schema),
        on_duplicate=_choice(_POLICIES, on_duplicate, "on_duplicate"),
        duplicate_scope=_choice(_SCOPES, duplicate_scope, "duplicate_scope"),
        cancellable=cancellable,
        delivery=_choice(_DELIVERIES, delivery, "delivery"),
    )

    def register(run: Callable[[dict], Any]) -> Callable[[dict], Any]:
        if name in _tools:
            raise ValueError(f"tool {name!r} is declared twice")
        _tools[name] = _Entry(spec, schema, run)
        return run

    return register


def update(message: str) -> None:
    """Push a progress update into the conversation. The first one answers
    the call; the tool goes on in the background."""
    host.update(message)


def cancelled() -> bool:
    """True once the call has been asked to stop: clean up and return."""
    return host.cancelled()


def log(message: str, level: str = "info") -> None:
    """A line in the host's log (trace, debug, info, warn or error),
    tagged with the plugin, tool and call."""
    host.log(_choice(_LEVELS, level, "level"), message)


def call_info() -> types.CallContext:
    """This call's ``call_id``, ``session_id`` and ``tool``."""
    return host.call_info()


def _declared(schema: dict) -> dict:
    """The schema the host gets: each top-level ``default`` said in its
    property's description rather than as a keyword strict mode refuses."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    declared = {}
    for key, prop in properties.items():
        if isinstance(prop, dict) and "default" in prop:
            prop = dict(prop)
            said = f"Default: {json.dumps(prop.pop('default'))}."
            text = prop.get("description", "").rstrip()
            prop["description"] = f"{text} {said}" if text else said
        declared[key] = prop
    return {**schema, "properties": declared}


def _absent_nulls(value: Any) -> Any:
    """``value`` with every null-valued key of every object left out."""
    if isinstance(value, dict):
        return {k: _absent_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_absent_nulls(v) for v in value]
    return value


def _with_defaults(args: dict, schema: dict) -> dict:
    for key, prop in schema.get("properties", {}).items():
        if key not in args and isinstance(prop, dict) and "default" in prop:
            args[key] = prop["default"]
    return args


def _output(result: Any) -> types.ToolOutput:
    if result is None:
        return types.ToolOutput(text=None, data=None)
    if isinstance(result, str):
        return types.ToolOutput(text=result, data=None)
    if isinstance(result, Output):
        data = None if result.data is None else json.dumps(result.data)
        return types.ToolOutput(text=result.text, data=data)
    return types.ToolOutput(text=None, data=json.dumps(result))


class Tool(exports.Tool):
    """The ``tool`` interface, assembled from the ``@tool`` declarations."""

    def describe(self) -> list[types.ToolSpec]:
        return [entry.spec for entry in _tools.values()]

    def call(self, name: str, arguments: str) -> types.ToolOutput:
        entry = _tools.get(name)
        if entry is None:
            raise Err(types.ToolError_Failed(f"no tool named {name}"))
        try:
            args = json.loads(arguments)
        except ValueError as e:
            raise Err(types.ToolError_InvalidArguments(f"arguments are not JSON: {e}")) from None
        if not isinstance(args, dict):
            raise Err(types.ToolError_InvalidArguments("arguments must be a JSON object"))
        try:
            result = entry.run(_with_defaults(_absent_nulls(args), entry.schema))
        except InvalidArguments as e:
            raise Err(types.ToolError_InvalidArguments(str(e))) from None
        except Failed as e:
            raise Err(types.ToolError_Failed(str(e))) from None
        except BaseException:
            # A bug, not an answer: the host turns the trap into a generic
            # message for the model; the operator reads the traceback here.
            host.log(types.LogLevel.ERROR, traceback.format_exc())
            raise
        return _output(result)
