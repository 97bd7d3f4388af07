"""Fakes of execbridge's backends, for tests and benchmarks of code that uses them. Opt-in.

Nothing in the product imports this package (``upstream/``, ``sandbox/``, ``engine/`` and the
surfaces never do); a test or a benchmark imports it and injects the fakes through constructors, the
way ``httpx.MockTransport`` and ``starlette.testclient`` are used:

- ``FakeApp`` / ``FakeUpstream`` (``testing/upstream.py``): a scripted Chat Completions server that
  holds requests to Databricks' rules (``check_request``), in-process over ``httpx.ASGITransport`` or
  on a 127.0.0.1 socket; the script is written with ``Turn``/``Reply`` (``testing/script.py``).
  ``python -m execbridge.testing --instant`` runs a canned one in its own process.
- ``FakeDatabricks`` (``testing/databricks.py``): that server as a Databricks workspace, with OAuth
  machine-to-machine for the Databricks SDK.
- ``ScriptedUpstream`` (``testing/scripted.py``): an ``Upstream`` that plays neutral events, for
  tests of the engine without HTTP.
- ``FakeContainerService`` (``testing/containers.py``): an in-memory stand-in for the sandbox.

It needs nothing beyond execbridge's own dependencies (starlette, uvicorn, httpx), so unlike
``starlette.testclient`` it has no import guard.
"""

from execbridge.testing.containers import FakeContainerService, FakeSession, Responder, echo, fake_output
from execbridge.testing.databricks import DATABRICKS_MODELS, FakeDatabricks, FakeOAuth
from execbridge.testing.databricks_rules import check_request
from execbridge.testing.script import (
    ErrorReply,
    FakeToolCall,
    Reply,
    ScriptTurn,
    Turn,
    last_tool_result,
    tool_results,
)
from execbridge.testing.scripted import ScriptedUpstream
from execbridge.testing.upstream import FakeApp, FakeUpstream, RecordedRequest

__all__ = [
    "DATABRICKS_MODELS",
    "ErrorReply",
    "FakeApp",
    "FakeContainerService",
    "FakeDatabricks",
    "FakeOAuth",
    "FakeSession",
    "FakeToolCall",
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptTurn",
    "ScriptedUpstream",
    "Turn",
    "check_request",
    "echo",
    "fake_output",
    "last_tool_result",
    "tool_results",
]
