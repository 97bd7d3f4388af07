"""Ask a model a question it answers by running code, with execbridge in this process (no server).

    python examples/ask_with_code.py --upstream http://127.0.0.1:8000/v1 --model my-model \\
        "What is the 30th Fibonacci number? Compute it."

The upstream is any OpenAI-compatible server (vLLM, Ollama, LiteLLM, Databricks serving endpoints);
its key is read from EXECBRIDGE_API_KEY (passed through to the upstream). Containers run in this
process as root, else in a running `execbridge sandbox-host`. The model's text streams to stdout; each
command it runs and that command's output are printed as they come.
"""

from __future__ import annotations

import argparse
import os

import anthropic

import execbridge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question")
    parser.add_argument("--upstream", default=os.environ.get("EXECBRIDGE_UPSTREAM", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--model", default=os.environ.get("EXECBRIDGE_MODEL", "default"))
    parser.add_argument("--data-dir", default=os.environ.get("EXECBRIDGE_DATA_DIR", "./execbridge-data"))
    args = parser.parse_args()

    with execbridge.open(upstream=args.upstream, data_dir=args.data_dir) as gateway:
        client = anthropic.Anthropic(
            api_key=os.environ.get("EXECBRIDGE_API_KEY", "none"),
            base_url=gateway.base_url,
            http_client=gateway.http_client(),
        )
        with client.messages.stream(
            model=args.model,
            max_tokens=2048,
            tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
            messages=[{"role": "user", "content": args.question}],
        ) as stream:
            for event in stream:
                if event.type == "text":
                    print(event.text, end="", flush=True)
                elif event.type == "content_block_stop" and event.content_block.type == "server_tool_use":
                    print(f"\n$ {event.content_block.input.get('command', event.content_block.input)}", flush=True)
                elif event.type == "content_block_stop" and event.content_block.type.endswith("_tool_result"):
                    result = event.content_block.content
                    print(getattr(result, "stdout", "") + getattr(result, "stderr", ""), end="", flush=True)
            print()


if __name__ == "__main__":
    main()
