"""``POST /v1/responses`` end to end: the official ``openai`` SDK → execbridge serve → fake upstream + real sandbox."""

from __future__ import annotations

import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
)

from execbridge.testing import Turn, last_tool_result

from .conftest import CLIENT_KEY, OTHER_KEY, Gateway

CODE_INTERPRETER = [{"type": "code_interpreter", "container": {"type": "auto"}}]
OUTPUTS = ["code_interpreter_call.outputs"]
PRIMES = "n = [p for p in range(2, 8000) if all(p % d for d in range(2, int(p**.5) + 1))]\nprint(n[999])"

_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(gateway: Gateway, key: str = CLIENT_KEY) -> openai.OpenAI:
    made = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    _CLIENTS.append(made)
    return made


def strict(response: Response) -> Response:
    """The response validated field by field (the SDK builds it leniently by default): nothing missing."""
    return Response.model_validate(response.model_dump(mode="json", warnings=False))


def test_code_computes_and_answers(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.text("").call("code_execution", code=PRIMES),
            lambda req: Turn.text(f"The 1000th prime is {last_tool_result(req).split('stdout:')[1].strip()}."),
        ]
    )
    response = client(gateway).responses.create(
        model="gpt-5", input="What is the 1000th prime?", tools=CODE_INTERPRETER, include=OUTPUTS
    )
    strict(response)
    call, answer = response.output
    assert isinstance(call, ResponseCodeInterpreterToolCall)
    assert call.id.startswith("ci_") and call.code == PRIMES and call.status == "completed"
    assert call.outputs is not None and [o.type for o in call.outputs] == ["logs"]
    assert call.outputs[0].logs == "7919\n"
    assert isinstance(answer, ResponseOutputMessage)
    assert response.output_text == "The 1000th prime is 7919."
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.tools[0].type == "code_interpreter"
