"""Real OpenAI-compatible servers on 127.0.0.1, with a real ``execbridge serve`` in front of them.

The servers come from ``scripts/install-real-servers.sh`` (cached under ``EXECBRIDGE_TEST_CACHE``,
default ``/var/cache/execbridge-test``); without them the tests are skipped, saying what to run.
llama-cpp-python's server serves SmolLM2-135M-Instruct with the ``chatml-function-calling`` chat
format, which makes even so small a model emit tool calls when ``tool_choice`` forces one. The
``upstream`` fixture is that server, and LiteLLM's proxy in front of it (``--litellm`` install), so
every test runs against both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from execbridge.testing.processes import stop_with_parent
from gateway.conftest import serve_process

CACHE = Path(os.environ.get("EXECBRIDGE_TEST_CACHE", "/var/cache/execbridge-test"))
LLAMA_PYTHON = CACHE / "llama-venv" / "bin" / "python"
LITELLM = CACHE / "litellm-venv" / "bin" / "litellm"
MODEL_FILE = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"  # the alias the server answers to
# 8192 is SmolLM2's trained context: room for the system note, the functions and a few rounds of output.
CONTEXT_TOKENS = 8192
START_TIMEOUT_S = 120.0
SANDBOX_ENV = {
    "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
    "EXECBRIDGE_SANDBOX__DISK_MB": "64",
    "EXECBRIDGE_SANDBOX__PIDS": "128",
    # The model writes whatever it likes; a loop it wrote must not hold the suite for minutes.
    "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "10",
    "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
}


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1, as the gateway's --upstream wants it
    log: Path


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str


@dataclass(frozen=True)
class Gateway:
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(command: list[str], base_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """``command`` until the block ends, once ``{base_url}/models`` answers 200."""
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=stop_with_parent)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{command[0]} did not start:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if not LLAMA_PYTHON.exists() or not MODEL_FILE.exists():
        pytest.skip(f"llama-cpp-python's server is not installed under {CACHE}: run scripts/install-real-servers.sh")
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    port = _free_port()
    command = [
        str(LLAMA_PYTHON), "-m", "llama_cpp.server",
        "--model", str(MODEL_FILE), "--model_alias", MODEL,
        "--chat_format", "chatml-function-calling",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(CONTEXT_TOKENS), "--n_threads", "2", "--seed", "7",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with running(command, base_url, log):
        yield LlamaServer(base_url, log)


@pytest.fixture(scope="session")
def litellm_proxy(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LiteLLM's proxy in front of the llama server, offline (its cost map from the package itself)."""
    if not LITELLM.exists():
        pytest.skip(f"LiteLLM's proxy is not installed under {CACHE}: run scripts/install-real-servers.sh --litellm")
    directory = tmp_path_factory.mktemp("litellm")
    config = directory / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {llama_server.base_url}\n"
        "      api_key: sk-local\n"
    )
    port = _free_port()
    command = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True", "LITELLM_TELEMETRY": "False"}
    base_url = f"http://127.0.0.1:{port}/v1"
    with running(command, base_url, directory / "proxy.log", env):
        yield base_url


@pytest.fixture(scope="session", params=["llama-cpp", "litellm"])
def upstream(request: pytest.FixtureRequest) -> Upstream:
    """The llama server itself, then LiteLLM's proxy in front of it."""
    fixture = "llama_server" if request.param == "llama-cpp" else "litellm_proxy"
    found = request.getfixturevalue(fixture)
    return Upstream(request.param, found.base_url if isinstance(found, LlamaServer) else found)


@contextmanager
def serve_gateway(upstream: str, data_dir: Path, **extra_env: str) -> Iterator[Gateway]:
    """``execbridge serve --upstream <upstream>`` with a real sandbox, until the block ends."""
    env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(data_dir), **SANDBOX_ENV, **extra_env}
    with serve_process(env, data_dir, "--upstream", upstream) as url:
        yield Gateway(url, data_dir / "serve.log")


@pytest.fixture(scope="session")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serve_gateway(upstream.base_url, tmp_path_factory.mktemp(f"gateway-{upstream.name}")) as served:
        yield served
