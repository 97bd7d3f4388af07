"""``execbridge serve --provider databricks`` end to end: a fake workspace (OAuth M2M with expiring
tokens) on 127.0.0.1, gateway keys managed with the CLI, model names, ``/v1/models``, gpt-oss's one
call per message, and the start-up refusals (no keys beyond loopback, a host that never answers).

The gateway here is held to the Chat Completions route (``--upstream-format chat``); Claude's default,
Anthropic-native route is ``test_databricks_native.py``'s."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest
from click.testing import CliRunner

from execbridge.cli import main
from execbridge.testing import FakeDatabricks, Turn

from .conftest import sdk_client, serve_process

# The SDK warns that the 4.5 names are deprecated; they are what Databricks serves.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
SANDBOX_ENV = {
    "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
    "EXECBRIDGE_SANDBOX__DISK_MB": "64",
    "EXECBRIDGE_SANDBOX__PIDS": "128",
    "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "20",
    "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
}


@dataclass
class Running:
    url: str
    data_dir: Path
    log: Path
    env: dict[str, str]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    return {
        **base,
        "EXECBRIDGE_DATA_DIR": str(data_dir),
        "DATABRICKS_CONFIG_FILE": str(data_dir / "no-databrickscfg"),
        **SANDBOX_ENV,
        **extra,
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execbridge", *args], env=env, capture_output=True, text=True, timeout=60
    )


@contextmanager
def serve(data_dir: Path, env: dict[str, str], *args: str) -> Iterator[Running]:
    with serve_process(env, data_dir, *args) as url:
        yield Running(url, data_dir, data_dir / "serve.log", env)


@pytest.fixture(scope="module")
def workspace() -> Iterator[FakeDatabricks]:
    with FakeDatabricks(token_ttl_s=2.0, reject_multiple_tool_calls=True) as ws:
        yield ws


@pytest.fixture(scope="module")
def gateway(workspace: FakeDatabricks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("databricks-gateway")
    env = _env(
        data_dir,
        DATABRICKS_HOST=workspace.url,
        DATABRICKS_CLIENT_ID=workspace.client_id,
        DATABRICKS_CLIENT_SECRET=workspace.client_secret,
        EXECBRIDGE_UPSTREAM_AUTH_TIMEOUT_S="1",
    )
    with serve(data_dir, env, "--provider", "databricks", "--upstream-format", "chat") as running:
        yield running


@pytest.fixture
def ws(workspace: FakeDatabricks) -> Iterator[FakeDatabricks]:
    workspace.reset()
    yield workspace
    assert workspace.remaining == 0, "the test left scripted turns unused"


def client(gateway: Running, key: str = "anything") -> anthropic.Anthropic:
    return sdk_client(gateway.url, key)


def ask(gateway: Running, key: str, model: str = "claude-sonnet-4-5") -> anthropic.types.Message:
    return client(gateway, key).messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "hi"}]
    )


# The tests below share one gateway and run in file order: open (no keys yet), then keys.


def test_loopback_without_keys_warns_and_maps_model_names(gateway, ws):
    assert "no gateway API keys" in gateway.log.read_text()
    ws.add(Turn.text("Hello from Databricks."))
    message = ask(gateway, "whatever-the-client-sends", model="claude-sonnet-4-5-20250929")
    assert message.model == "claude-sonnet-4-5-20250929"  # what the client sent, echoed
    assert message.content[0].text == "Hello from Databricks."
    request = ws.requests[-1]
    assert ws.chat_requests[-1]["model"] == "databricks-claude-sonnet-4-5"
    assert request.headers["authorization"].startswith("Bearer fake-oauth-")  # the gateway's own token


def test_gateway_keys_from_the_cli(gateway, ws):
    created = _cli(gateway.env, "keys", "create", "--name", "alice")
    assert created.returncode == 0, created.stderr
    alice = created.stdout.strip()
    assert alice.startswith("ebk_") and "cannot be shown again" in created.stderr

    with pytest.raises(anthropic.AuthenticationError) as caught:
        ask(gateway, "ebk_not-a-key")
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert caught.value.response.headers["request-id"].startswith("req_")
    missing = httpx.post(f"{gateway.url}/v1/messages", json={})
    assert missing.status_code == 401 and "x-api-key header is required" in missing.json()["error"]["message"]

    ws.add(Turn.text("Hi Alice."))
    assert ask(gateway, alice).content[0].text == "Hi Alice."

    listed = _cli(gateway.env, "keys", "ls")
    key_id = listed.stdout.split()[0]
    assert key_id.startswith("key_") and "active" in listed.stdout and "alice" in listed.stdout
    assert alice not in listed.stdout

    revoked = _cli(gateway.env, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(anthropic.AuthenticationError):
        ask(gateway, alice)
    assert _cli(gateway.env, "keys", "revoke", key_id).returncode == 1
    assert "revoked" in _cli(gateway.env, "keys", "ls").stdout


@pytest.fixture(scope="module")
def key(gateway: Running) -> str:
    return _cli(gateway.env, "keys", "create", "--name", "tests").stdout.strip()


def test_containers_belong_to_the_gateway_key(gateway, ws, key):
    other = _cli(gateway.env, "keys", "create").stdout.strip()
    ws.add(Turn.tool_call("bash_code_execution", command="echo kept > f"), Turn.text("Saved."))
    first = client(gateway, key).messages.create(
        model="claude-sonnet-4-5", max_tokens=256, tools=CODE_EXECUTION, messages=[{"role": "user", "content": "go"}]
    )
    assert first.container is not None
    with pytest.raises(anthropic.NotFoundError):
        client(gateway, other).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=256,
            tools=CODE_EXECUTION,
            container=first.container.id,
            messages=[{"role": "user", "content": "read it"}],
        )


def test_tokens_are_refreshed_while_serving(gateway, ws, key):
    ws.add(Turn.text("one"), Turn.text("two"))
    assert ask(gateway, key).content[0].text == "one"
    time.sleep(2.1)  # the token the gateway holds has expired
    assert ask(gateway, key).content[0].text == "two"
    first, second = (r.headers["authorization"] for r in ws.requests if r.path.endswith("/chat/completions"))
    assert first != second and ws.rejections == []


def test_models_list_and_retrieve(gateway, ws, key):
    page = client(gateway, key).models.list()
    ids = [m.id for m in page]
    assert set(ids) == {
        "databricks-claude-sonnet-4-5",
        "databricks-claude-opus-4-5",
        "databricks-claude-haiku-4-5",
        "databricks-gpt-oss-120b",
    }
    assert all(m.type == "model" and m.created_at.year >= 2025 for m in page)
    assert client(gateway, key).models.retrieve("claude-opus-4-5").id == "databricks-claude-opus-4-5"
    with pytest.raises(anthropic.NotFoundError):
        client(gateway, key).models.retrieve("claude-unknown-9")
    assert ws.requests[0].path == "/api/2.0/serving-endpoints"


def test_databricks_error_envelope_reaches_the_client(gateway, ws, key):
    ws.add(Turn.error(400, "Input is too long for requested model.", code="BAD_REQUEST"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(gateway, key)
    assert caught.value.body["error"]["message"] == "upstream: Input is too long for requested model."
    assert caught.value.body["error"]["details"] == {"error_code": "BAD_REQUEST"}


def all_results(request: dict) -> list[str]:
    """Every tool message's text (split history puts each result right after its own call)."""
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_gpt_oss_two_parallel_server_calls_then_a_follow_up(gateway, ws, key):
    ws.add(
        Turn.tool_calls(
            ("bash_code_execution", '{"command": "echo one"}'), ("bash_code_execution", '{"command": "echo two"}')
        ),
        lambda req: Turn.text(f"Got {' and '.join(r.split('stdout:')[1].strip() for r in all_results(req))}."),
        lambda req: Turn.text(f"You asked after {len(req['messages'])} messages."),
    )
    sdk = client(gateway, key)
    first = sdk.messages.create(
        model="databricks-gpt-oss-120b",
        max_tokens=512,
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": "run two commands"}],
    )
    assert [b.type for b in first.content] == [
        "server_tool_use",
        "bash_code_execution_tool_result",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "text",
    ]
    assert first.content[-1].text == "Got one and two."
    follow_up = sdk.messages.create(
        model="databricks-gpt-oss-120b",
        max_tokens=512,
        tools=CODE_EXECUTION,
        container=first.container.id,
        messages=[
            {"role": "user", "content": "run two commands"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": "thanks, and now?"},
        ],
    )
    assert follow_up.content[0].text.startswith("You asked after")
    assert ws.rejections == []  # every history had one call per assistant message
    for request in ws.chat_requests:
        assert all(len(m.get("tool_calls") or ()) <= 1 for m in request["messages"])


def test_slow_token_endpoint_is_a_504(gateway, ws, key):
    ws.oauth.revoke_all()  # the upstream refuses the held token: the gateway fetches another…
    ws.oauth.token_delay = 2.0  # …from an identity provider that does not answer in time
    try:
        # Had the gateway waited for the slow token, the request would have succeeded: the 504 is the proof.
        with pytest.raises(anthropic.APIStatusError) as caught:
            ask(gateway, key)
        assert caught.value.status_code == 504 and caught.value.body["error"]["type"] == "timeout_error"
    finally:
        ws.oauth.token_delay = 0.0


# ---------------------------------------------------------------- start-up refusals and doctor


def test_refuses_a_public_address_with_held_credentials_and_no_keys(tmp_path):
    result = _cli(
        _env(tmp_path),
        "serve",
        "--host",
        "0.0.0.0",
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--upstream-api-key",
        "sk-gateway",
    )
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr and "execbridge keys create" in result.stderr


def test_unreachable_databricks_host_fails_start_up_within_the_bound(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = _env(tmp_path, DATABRICKS_HOST=host, DATABRICKS_TOKEN="dapi-x", EXECBRIDGE_UPSTREAM_AUTH_TIMEOUT_S="0.5")
        # The message names the bound it kept (the SDK's own retries would take minutes).
        result = _cli(env, "serve", "--provider", "databricks")
    assert result.returncode == 1
    assert f"host {host} did not answer within 0.5 s" in result.stderr


def test_doctor_checks_the_upstream(tmp_path):
    with FakeDatabricks([Turn.tool_call("ping", note="doctor")], pat="dapi-doctor") as ws:
        profile = tmp_path / "databrickscfg"
        profile.write_text(f"[ci]\nhost = {ws.url}\ntoken = dapi-doctor\n")
        env = {"DATABRICKS_CONFIG_FILE": str(profile), "DATABRICKS_CONFIG_PROFILE": "ci", "DATABRICKS_HOST": None}
        result = CliRunner().invoke(
            main, ["--data-dir", str(tmp_path), "doctor", "--provider", "databricks", "--check-tools"], env=env
        )
        assert "ok       upstream reachable" in result.output
        assert "ok       upstream authenticated" in result.output
        assert "databricks-claude-sonnet-4-5, databricks-claude-opus-4-5" in result.output
        assert (
            "ok       tool calling           databricks-claude-sonnet-4-5 called the offered function" in result.output
        )
        # Claude models are tried on the Anthropic route by default: "required" is tool_choice "any" there.
        assert ws.messages_requests[0]["tool_choice"] == {"type": "any"}

        ws.pat = "rotated"
        refused = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "doctor", "--provider", "databricks"], env=env)
    assert "FAILED   upstream" in refused.output and refused.exit_code == 1
