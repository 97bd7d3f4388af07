"""``POST /v1/responses`` end to end: the official ``openai`` SDK → execbridge serve → fake upstream + real sandbox."""

from __future__ import annotations

import base64
import json

import openai
import pydantic
import pytest
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionShellToolCallOutput,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseStreamEvent,
)

from execbridge.testing import Turn, last_tool_result, tool_results

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


def extras(value: object, path: str = "") -> list[str]:
    """Where a parsed value carries fields its SDK model does not declare."""
    if isinstance(value, pydantic.BaseModel):
        found = [f"{path}.{k}" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            found += extras(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in extras(v, f"{path}[{i}]")]
    return []


def strict(response: Response) -> Response:
    """The response validated field by field (the SDK builds it leniently by default): nothing missing,
    and nothing the SDK's models do not declare (so nothing a client would lose)."""
    checked = Response.model_validate(response.model_dump(mode="json", by_alias=True, warnings=False))
    # ``store`` is on every real OpenAI response (and in the request's echo) though the SDK declares none;
    # ``parsed`` is the stream helper's own field on text it parsed.
    assert [e for e in extras(checked) if e != ".store" and not e.endswith(".parsed")] == []
    return checked


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


def test_shell_call_and_its_output(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("bash_code_execution", command="echo hi; echo oops >&2; exit 3"), Turn.text("Done.")])
    shell = [{"type": "shell", "environment": {"type": "container_auto"}}]
    response = client(gateway).responses.create(model="gpt-5", input="Run it.", tools=shell)
    strict(response)
    call, output, answer = response.output
    assert isinstance(answer, ResponseOutputMessage)
    assert isinstance(call, ResponseFunctionShellToolCall) and call.id.startswith("sh_")
    assert call.call_id.startswith("call_") and call.action.commands == ["echo hi; echo oops >&2; exit 3"]
    assert call.environment is not None and call.environment.type == "container_reference"
    container_id = call.environment.container_id
    assert isinstance(output, ResponseFunctionShellToolCallOutput) and output.call_id == call.call_id
    assert output.id.startswith("sho_") and output.status == "completed"
    (entry,) = output.output
    assert (entry.stdout, entry.stderr) == ("hi\n", "oops\n")
    assert entry.outcome.type == "exit" and entry.outcome.exit_code == 3
    assert response.output_text == "Done."
    # The automatic environment is echoed as a reference to the container the calls ran in.
    assert response.tools[0].environment.type == "container_reference"
    assert response.tools[0].environment.container_id == container_id
    # What the model read: the exit code, stdout and stderr.
    assert "exit code: 3" in last_tool_result(fake.chat_requests[1])


def test_function_tool_mixed_in_and_resumed(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("code_execution", code="x = 6 * 7\nprint(x)"),
            Turn.tool_call("get_weather", city="Paris"),
            lambda req: Turn.text(f"Weather says {last_tool_result(req)}; x was computed."),
        ]
    )
    tools = [
        *CODE_INTERPRETER,
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    ]
    oa = client(gateway)
    first = oa.responses.create(model="gpt-5", input="Compute, then check the weather.", tools=tools, include=OUTPUTS)
    strict(first)
    ci, fn = first.output
    assert isinstance(ci, ResponseCodeInterpreterToolCall) and ci.outputs[0].logs == "42\n"
    assert isinstance(fn, ResponseFunctionToolCall) and fn.name == "get_weather" and fn.id.startswith("fc_")
    assert fn.call_id.startswith("call_") and json.loads(fn.arguments) == {"city": "Paris"}
    assert first.status == "completed"

    second = oa.responses.create(
        model="gpt-5",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": fn.call_id, "output": "sunny, 21 C"}],
        tools=tools,
    )
    strict(second)
    assert second.output_text == "Weather says sunny, 21 C; x was computed."
    assert second.previous_response_id == first.id
    # The code ran once: the second request's model saw its result in the history, not a new run.
    assert [o.type for o in second.output] == ["message"]
    history = fake.chat_requests[2]["messages"]
    assert sum("42" in str(m.get("content")) for m in history if m["role"] == "tool") == 1


def test_previous_response_id_across_three_turns_in_one_container(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("code_execution", code="open('/mnt/data/n.txt', 'w').write('1')\nx = 1"),
            Turn.text("Saved."),
            Turn.tool_call("code_execution", code="x += 1\nprint(x, open('/mnt/data/n.txt').read())"),
            Turn.text("Two."),
            Turn.tool_call("bash_code_execution", command="cat /mnt/data/n.txt; ls /mnt/data"),
            lambda req: Turn.text(f"Three turns; the model saw {len(req['messages'])} messages."),
        ]
    )
    tools = [*CODE_INTERPRETER, {"type": "shell", "environment": {"type": "container_auto"}}]
    oa = client(gateway)
    first = oa.responses.create(model="gpt-5", input="Save a number.", tools=tools, include=OUTPUTS)
    second = oa.responses.create(
        model="gpt-5", previous_response_id=first.id, input="Add one.", tools=tools, include=OUTPUTS
    )
    third = oa.responses.create(
        model="gpt-5", previous_response_id=second.id, input="Show the file.", tools=tools, include=OUTPUTS
    )
    containers = {first.output[0].container_id, second.output[0].container_id, third.output[0].environment.container_id}
    assert len(containers) == 1
    # The interpreter kept its state, and the file is there for the shell.
    assert second.output[0].outputs[0].logs == "2 1\n"
    assert third.output[1].output[0].stdout.startswith("1")
    # The third request's model saw the whole conversation: three user turns and every call.
    messages = fake.chat_requests[-1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Save a number.", "Add one.", "Show the file."]
    # Instructions are not carried over (OpenAI's rule); input items are listed per response.
    items = oa.responses.input_items.list(third.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "Show the file."


def test_stored_responses_are_retrieved_listed_and_deleted_by_their_owner_only(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("code_execution", code="print(2 + 2)"), Turn.text("Four.")])
    oa = client(gateway)
    created = oa.responses.create(
        model="gpt-5",
        instructions="Be brief.",
        input=[{"role": "user", "content": "What is 2 + 2?"}, {"role": "user", "content": "Use code."}],
        tools=CODE_INTERPRETER,
        metadata={"case": "store"},
    )
    assert created.output[0].outputs is None  # not asked for
    again = oa.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    with_outputs = oa.responses.retrieve(created.id, include=OUTPUTS)
    assert with_outputs.output[0].outputs[0].logs == "4\n"
    assert again.instructions == "Be brief." and again.metadata == {"case": "store"}

    items = oa.responses.input_items.list(created.id)
    assert [i.content[0].text for i in items.data] == ["Use code.", "What is 2 + 2?"]  # newest first
    asc = oa.responses.input_items.list(created.id, order="asc", limit=1)
    assert [i.content[0].text for i in asc] == ["What is 2 + 2?", "Use code."]  # the SDK pages on

    stranger = client(gateway, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        stranger.responses.create(model="gpt-5", previous_response_id=created.id, input="And now?")
    assert refused.value.code == "previous_response_not_found"

    # Nor can it run code in the owner's container by naming it.
    container_id = created.output[0].container_id
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(
            model="gpt-5", input="hi", tools=[{"type": "code_interpreter", "container": container_id}]
        )

    oa.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(created.id)


def test_store_false_keeps_nothing(gateway: Gateway, fake):
    fake.reset([Turn.text("Hello.")])
    oa = client(gateway)
    response = oa.responses.create(model="gpt-5", input="Hi", store=False)
    assert response.store is False and response.output_text == "Hello."
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)


CHART = """import matplotlib.pyplot as plt
v = [3, 5, 10]
print('mean =', sum(v) / len(v))
plt.bar(range(3), v)
plt.savefig('/mnt/data/bars.png')
"""


def test_a_chart_comes_back_as_an_image_output_and_a_downloadable_container_file(gateway: Gateway, fake):
    answer = "The mean is 6.0.\n\n[Download the chart](sandbox:/mnt/data/bars.png)"
    fake.reset([Turn.tool_call("code_execution", code=CHART), Turn.text(answer)])
    oa = client(gateway)
    response = oa.responses.create(
        model="gpt-5", input="Plot 3, 5, 10 as bars.", tools=CODE_INTERPRETER, include=OUTPUTS
    )
    strict(response)
    call, message = response.output
    assert call.container_id.startswith("cntr_")
    image, logs = call.outputs
    assert image.type == "image" and image.url.startswith("data:image/png;base64,")
    png = base64.b64decode(image.url.split(",", 1)[1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert logs.type == "logs" and logs.logs == "mean = 6.0\n"

    text = message.content[0]
    assert text.text == answer
    (citation,) = text.annotations
    assert citation.type == "container_file_citation" and citation.container_id == call.container_id
    assert citation.filename == "bars.png" and citation.file_id.startswith("cfile_")
    assert text.text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/bars.png"

    # The cited file is the container's, downloadable through the Containers API, byte for byte.
    listed = oa.containers.files.list(call.container_id)
    assert [(f.id, f.path, f.source) for f in listed.data] == [(citation.file_id, "/mnt/data/bars.png", "assistant")]
    assert oa.containers.files.content.retrieve(citation.file_id, container_id=call.container_id).read() == png


STREAM_EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


def typed(events: list) -> list[str]:
    """Each event validated strictly against the SDK's union of stream events; their types, in order."""
    for number, event in enumerate(events):
        assert event.sequence_number == number
        checked = STREAM_EVENTS.validate_python(event.model_dump(mode="json", by_alias=True, warnings=False))
        # (the stream helper hands some events out as subclasses of the same name, with a snapshot)
        assert type(checked).__name__ == type(event).__name__
        assert set(checked.model_extra or {}) <= {"snapshot", "parsed"}
    return [e.type for e in events]


def _collapse(kinds: list[str]) -> list[str]:
    """Runs of the same delta event as one."""
    return [k for i, k in enumerate(kinds) if not (k.endswith(".delta") and i and kinds[i - 1] == k)]


def test_streaming_events_in_openai_order_each_typed(gateway: Gateway, fake):
    answer = "The mean is 6.0: [chart](sandbox:/mnt/data/bars.png)"
    fake.reset([Turn.tool_call("code_execution", code=CHART).but(chunk_chars=8), Turn.text(answer, chunk_chars=5)])
    oa = client(gateway)
    with oa.responses.stream(model="gpt-5", input="Plot it.", tools=CODE_INTERPRETER, include=OUTPUTS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = typed(events)
    assert _collapse(kinds) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert code == CHART and kinds.count("response.code_interpreter_call_code.delta") > 1  # streamed as it came
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == answer and kinds.count("response.output_text.delta") > 1
    added = events[2].item
    assert added.type == "code_interpreter_call" and added.code == "" and added.outputs == []
    assert added.container_id.startswith("cntr_") and added.id.startswith("ci_")
    # The final response is the one the stream built, and the one stored.
    strict(final)
    assert final.status == "completed" and final.output_text == answer
    assert final.output[0].outputs[0].type == "image"
    stored = oa.responses.retrieve(final.id, include=OUTPUTS).model_dump()
    assert stored == final.model_dump(exclude={"output": {1: {"content": {0: {"parsed"}}}}})


def test_streamed_shell_call_and_function_call(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command="printf 'a\\nb\\n' | wc -l").but(chunk_chars=6),
            Turn.tool_call("lookup", query="two lines").but(chunk_chars=4),
        ]
    )
    tools = [
        {"type": "shell", "environment": {"type": "container_auto"}},
        {
            "type": "function",
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    ]
    with client(gateway).responses.stream(model="gpt-5", input="Count.", tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert _collapse(typed(events)) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.shell_call_output_content.delta",
        "response.shell_call_output_content.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    command = "".join(e.delta for e in events if e.type == "response.shell_call_command.delta")
    assert command == "printf 'a\\nb\\n' | wc -l"
    done = next(e for e in events if e.type == "response.shell_call_output_content.done")
    assert done.output[0].stdout == "2\n" and done.output[0].outcome.exit_code == 0
    shell, output, call = final.output
    assert (shell.type, output.type, call.type) == ("shell_call", "shell_call_output", "function_call")
    assert json.loads(call.arguments) == {"query": "two lines"} and final.status == "completed"


def test_errors_in_openai_envelope(gateway: Gateway, fake):
    oa = client(gateway)
    with pytest.raises(openai.BadRequestError) as bad:
        oa.responses.create(model="gpt-5", input="hi", temperature=3)
    assert bad.value.param == "temperature" and bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        oa.responses.create(model="gpt-5", input="hi", tools=[{"type": "web_search"}])
    assert bad.value.param == "tools.0.type"
    with pytest.raises(openai.NotFoundError) as missing:
        oa.responses.create(
            model="gpt-5", input="hi", tools=[{"type": "code_interpreter", "container": "cntr_" + "0" * 48}]
        )
    assert missing.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve("resp_unknown")
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "dapi-unknown").responses.create(model="gpt-5", input="hi")
    # The upstream's refusal before the stream starts keeps its status, streaming or not.
    fake.reset([Turn.error(429, "slow down", retry_after=0)] * 4)  # the gateway's own 3 retries, then the client
    with pytest.raises(openai.RateLimitError):
        oa.responses.create(model="gpt-5", input="hi", stream=True)


def test_an_upstream_failure_after_the_start_ends_the_stream_with_response_failed(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("code_execution", code="print(1)"),
            Turn.error(400, "the model cannot go on"),
        ]
    )
    events = list(client(gateway).responses.create(model="gpt-5", input="hi", tools=CODE_INTERPRETER, stream=True))
    kinds = typed(events)
    assert not any(e.model_extra for e in events)  # the raw events: no field the SDK does not know
    assert kinds[-1] == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and "cannot go on" in failed.error.message
    assert failed.output[0].type == "code_interpreter_call" and failed.output[0].status == "completed"


def test_a_code_call_in_the_same_batch_as_a_function_call_runs_in_the_next_response(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("code_execution", code="print(6 * 7)").call("get_time"),
            lambda req: Turn.text(f"Got {' and '.join(tool_results(req))}."),
        ]
    )
    tools = [*CODE_INTERPRETER, {"type": "function", "name": "get_time"}]
    oa = client(gateway)
    with oa.responses.stream(model="gpt-5", input="Both.", tools=tools, include=OUTPUTS) as stream:
        list(stream)
        first = stream.get_final_response()
    deferred, fn = first.output
    assert deferred.type == "code_interpreter_call" and deferred.status == "incomplete" and deferred.outputs is None
    assert fn.type == "function_call" and first.status == "completed"
    second = oa.responses.create(
        model="gpt-5",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": fn.call_id, "output": "noon"}],
        tools=tools,
        include=OUTPUTS,
    )
    strict(second)
    ran, answer = second.output
    assert ran.id == deferred.id and ran.code == "print(6 * 7)" and ran.outputs[0].logs == "42\n"
    assert answer.content[0].text == "Got exit code: 0\nstdout:\n42\n and noon."


def test_file_ids_are_put_in_the_automatic_container_and_the_model_is_told_where(gateway: Gateway, fake):
    oa = client(gateway)
    uploaded = oa.files.create(file=("data.csv", b"x\n1\n2\n3\n"), purpose="user_data")
    path = f"/mnt/data/{uploaded.id}-data.csv"
    code = f"import csv\nprint(sum(int(r['x']) for r in csv.DictReader(open({path!r}))))"
    fake.reset(
        [
            lambda req: Turn.tool_call("code_execution", code=code) if path in str(req["messages"]) else "not told",
            Turn.text("The sum is 6."),
        ]
    )
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [uploaded.id]}}]
    response = oa.responses.create(model="gpt-5", input="Sum x.", tools=tools, include=OUTPUTS)
    call = response.output[0]
    assert call.outputs[-1].logs == "6\n"
    listed = oa.containers.files.list(call.container_id)
    assert [(f.path, f.source) for f in listed] == [(path, "user")]


def test_a_figure_shown_is_an_image_output_and_then_closed(gateway: Gateway, fake):
    shown = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()\nprint('drawn')"
    fake.reset(
        [
            Turn.tool_call("code_execution", code=shown),
            Turn.tool_call("code_execution", code="print(len(plt.get_fignums()))"),
            Turn.text("Here it is."),
        ]
    )
    oa = client(gateway)
    response = oa.responses.create(model="gpt-5", input="Plot squares.", tools=CODE_INTERPRETER, include=OUTPUTS)
    strict(response)
    drawn, after, _ = response.output
    image, logs = drawn.outputs
    assert image.type == "image" and base64.b64decode(image.url.split(",", 1)[1]).startswith(b"\x89PNG")
    assert logs.logs == "drawn\n"
    # Shown once, like a notebook: the figure was closed, so the next cell shows nothing more.
    assert [o.type for o in after.outputs] == ["logs"] and after.outputs[0].logs == "0\n"
    assert oa.containers.files.list(drawn.container_id).data == []  # nothing was saved
