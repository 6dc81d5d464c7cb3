"""The outlet agent's in-process fixtures, shared with tests/outlet."""

from __future__ import annotations

from tests.outlet.conftest import agent, agent_factory  # noqa: F401 - pytest fixtures
