"""The README's agent imports against the pinned LiveKit and registers its entrypoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.py"


def test_the_example_agent_loads() -> None:
    spec = importlib.util.spec_from_file_location("example_agent", EXAMPLE)
    assert spec is not None and spec.loader is not None
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    assert agent.server._entrypoint_fnc is agent.entrypoint


def test_the_readme_shows_the_example_whole() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    assert EXAMPLE.read_text().split('"""\n\n', 1)[1] in readme
