"""One bash command through the official SDK against a running gateway and the scripted upstream: the
step the fault tests take before, during and after a fault."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client


@dataclass(frozen=True, slots=True)
class Ran:
    container: str
    stdout: str
    stderr: str


def ask_with_code_execution(gateway: Gateway, container: str | None) -> anthropic.types.beta.BetaMessage:
    """One request offering code execution, in ``container`` (None: a new one)."""
    return sdk_client(gateway.url, CLIENT_KEY).beta.messages.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=256,
        betas=["code-execution-2025-08-25"],
        tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
        container=container,
        messages=[{"role": "user", "content": "run it"}],
    )


def run_bash(gateway: Gateway, command: str, container: str | None = None) -> Ran:
    """The model runs ``command`` once, then answers; its one result, which must be a bash result."""
    gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
    message = ask_with_code_execution(gateway, container)
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container is not None and len(results) == 1, message.content
    assert results[0].content.type == "bash_code_execution_result", results[0].content
    return Ran(message.container.id, results[0].content.stdout, results[0].content.stderr)
