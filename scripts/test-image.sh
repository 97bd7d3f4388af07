#!/usr/bin/env bash
# Builds the container image (scripts/build-image.sh: Debian base from mmdebstrap, no registry) and runs it
# with the README's flags: /readyz, `execbridge doctor` inside, two code-execution requests through the
# anthropic SDK against the scripted fake upstream, a graceful stop. Prints each phase's time.
# Outside .ci/run (it needs root, podman and a few minutes for a cold base). Usage: scripts/test-image.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${EXECBRIDGE_IMAGE:-localhost/execbridge:test}
[ "$(id -u)" -eq 0 ] || { echo "scripts/test-image.sh needs root (podman, mmdebstrap)" >&2; exit 2; }
[ -x "$here/.venv/bin/python" ] || "$here/scripts/install.sh" --test

started=$SECONDS
echo "== build $image"
EXECBRIDGE_IMAGE=$image "$here/scripts/build-image.sh"
built=$SECONDS
# shellcheck source=scripts/podman-flags.sh
source "$here/scripts/podman-flags.sh"
echo "== run $image"
PODMAN_GLOBAL="${podman_global[*]}" PODMAN_LIMITS="${podman_limits[*]}" \
  "$here/.venv/bin/python" "$here/scripts/image_smoke.py" "$image"
echo "== image test passed: build $((built - started)) s, run $((SECONDS - built)) s"
