#!/usr/bin/env bash
# Installs everything execbridge needs on a Debian 12 machine with Python 3.11, idempotently:
#   - system packages: bubblewrap (isolation), util-linux (setpriv), e2fsprogs (workspace disks),
#     libseccomp2 (syscall filter), and the sandbox runtime (Python 3.11 + data libraries + CLI tools);
#   - the sandbox runtime venv at $EXECBRIDGE_RUNTIME (default /opt/execbridge/runtime), built on
#     Debian's python3.11 with its packages, plus the few libraries Debian lacks (from PyPI);
#   - the user `execbridge` that the gateway runs as when started as root;
#   - the gateway itself into ./.venv (with test extras when --test is given, and then Debian's chromium and
#     chromium-driver for the playground's browser tests).
#   - with --systemd: the unit deploy/execbridge.service (and /etc/execbridge/execbridge.env to fill in).
# Usage: scripts/install.sh [--test] [--runtime full|minimal] [--systemd]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
extras=""
runtime_kind="full"
systemd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --test) extras="[test]"; shift ;;
    --runtime) runtime_kind="$2"; shift 2 ;;
    --systemd) systemd=1; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
runtime_dir="${EXECBRIDGE_RUNTIME:-/opt/execbridge/runtime}"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

base_packages=(bubblewrap util-linux mount e2fsprogs libseccomp2 python3.11 python3.11-venv python3-pip bash coreutils procps)
minimal_runtime=(python3-numpy python3-matplotlib)  # matplotlib: the Files API tests draw a chart
full_runtime=(
  python3-numpy python3-pandas python3-scipy python3-sklearn python3-statsmodels python3-matplotlib
  python3-seaborn python3-openpyxl python3-xlsxwriter python3-xlrd python3-pil python3-docx python3-pypdf
  python3-pdfkit python3-reportlab python3-img2pdf python3-sympy python3-mpmath python3-tqdm
  python3-dateutil python3-tz python3-joblib
  unzip unrar-free p7zip-full bc ripgrep fd-find sqlite3 file less jq
)
# Libraries Anthropic's containers list that Debian 12 does not package.
full_runtime_pypi=("pyarrow<18" python-pptx pdfplumber pypdfium2 pdf2image tabula-py)

# With --test: the headless browser and its WebDriver for the playground's browser tests (Selenium drives them).
browser_test=(chromium chromium-driver)

packages=("${base_packages[@]}")
if [ "$runtime_kind" = full ]; then packages+=("${full_runtime[@]}"); else packages+=("${minimal_runtime[@]}"); fi
if [ -n "$extras" ]; then packages+=("${browser_test[@]}"); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The unprivileged user the gateway runs as when `execbridge serve` is started as root (the privilege
# split, docs/sandbox.md): no login, no home, its own group (the sandbox host's socket is 0660 to it).
if ! getent passwd execbridge >/dev/null; then
  sudo_if_needed useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin execbridge
fi

# The sandbox runtime: Debian's interpreter and packages, seen through a venv so extra PyPI
# libraries stay out of the system's site-packages.
if [ ! -x "$runtime_dir/bin/python3" ]; then
  sudo_if_needed mkdir -p "$(dirname "$runtime_dir")"
  sudo_if_needed /usr/bin/python3.11 -m venv --system-site-packages --without-pip "$runtime_dir"
fi
if [ "$runtime_kind" = full ] && ! "$runtime_dir/bin/python3" -c "import pyarrow, pptx, pdfplumber, pandas, matplotlib" 2>/dev/null; then
  # Pin what Debian already provides, so PyPI wheels never shadow numpy/pillow with builds that
  # Debian's pandas, scipy and matplotlib were not compiled against.
  constraints=$(mktemp)
  /usr/bin/python3.11 - > "$constraints" <<'PY'
import importlib.metadata as m
for name in ("numpy", "pillow", "pandas", "scipy", "matplotlib", "openpyxl", "python-dateutil", "pytz"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass
PY
  sudo_if_needed /usr/bin/python3.11 -m pip --python "$runtime_dir/bin/python3" install -q \
    --no-warn-script-location --constraint "$constraints" "${full_runtime_pypi[@]}"
  rm -f "$constraints"
fi

# The gateway, on Debian's python3.11 unless $PYTHON names another: started as root, `serve` runs the
# gateway as the user `execbridge`, which must be able to run this interpreter (a pyenv build under
# /root is out of its reach). A venv built on another interpreter than the chosen one is rebuilt.
python=$(command -v "${PYTHON:-/usr/bin/python3.11}" || command -v python3)
python_home=$(dirname "$python")
if [ -x "$here/.venv/bin/python" ] && ! grep -qx "home = $python_home" "$here/.venv/pyvenv.cfg"; then
  rm -rf "$here/.venv"
fi
if [ ! -x "$here/.venv/bin/python" ]; then
  "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$here/.venv/bin/python" -m pip install -q -e "$here$extras"

# With --test: the real OpenAI-compatible servers the tests drive the gateway against (llama-cpp-python's
# server with a small GGUF model, and LiteLLM's proxy), each in its own cached venv.
if [ -n "$extras" ]; then
  "$here/scripts/install-real-servers.sh" --litellm
fi

# With --systemd: the service unit, pointing at this checkout; settings in an environment file only root reads.
if [ -n "$systemd" ]; then
  sed "s#@PREFIX@#$here#g" "$here/deploy/execbridge.service" | sudo_if_needed tee /etc/systemd/system/execbridge.service >/dev/null
  sudo_if_needed install -d -m 0755 /etc/execbridge
  if [ ! -e /etc/execbridge/execbridge.env ]; then
    printf '%s\n' "# EXECBRIDGE_* settings for execbridge.service (see README.md)" \
      "EXECBRIDGE_HOST=127.0.0.1" "EXECBRIDGE_PORT=8787" "#EXECBRIDGE_UPSTREAM_URL=https://<workspace-host>/serving-endpoints" |
      sudo_if_needed install -m 0600 /dev/stdin /etc/execbridge/execbridge.env
  fi
  if [ -d /run/systemd/system ]; then
    sudo_if_needed systemctl daemon-reload
  fi
  echo "execbridge.service installed: fill in /etc/execbridge/execbridge.env, then: systemctl enable --now execbridge"
fi
