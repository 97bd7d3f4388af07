#!/usr/bin/env bash
# Builds the container image of execbridge (gateway + root sandbox host + the full sandbox runtime) with
# podman, with no registry image: the base is a Debian 12 root filesystem made by mmdebstrap from Debian's
# own packages and imported with `podman import`; the Containerfile adds the gateway on top.
#   - base image  localhost/execbridge-base:bookworm  (cached: rebuilt only when its package list changes)
#   - image       localhost/execbridge:latest          (or $EXECBRIDGE_IMAGE)
# Python packages come from a wheelhouse built here (pip download/wheel on the host), so the build itself
# needs no network. Needs root (mmdebstrap, podman); installs mmdebstrap and podman when missing.
# Usage: scripts/build-image.sh            (see the README, "Container image", for how to run it)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${EXECBRIDGE_IMAGE:-localhost/execbridge:latest}
cache=${EXECBRIDGE_IMAGE_CACHE:-/var/cache/execbridge-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

step() { echo "== $* ($(date +%T))"; }

if ! command -v mmdebstrap >/dev/null || ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  step "installing mmdebstrap, podman and runc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mmdebstrap podman runc >/dev/null
fi
mkdir -p "$cache"

# The Debian packages of scripts/install.sh (base and full runtime), so that install.sh inside the build
# finds them all and needs no apt; plus what the image itself needs.
packages=$(bash -c "source <(sed -n '/^base_packages=/,/^full_runtime_pypi=/p' '$here/scripts/install.sh'); \
  echo \${base_packages[*]} \${full_runtime[*]}")
packages="$packages ca-certificates tini"
base_tag="execbridge-base:bookworm-$(echo "$packages" | tr ' ' '\n' | sort | sha256sum | cut -c1-12)"
if ! podman image exists "localhost/$base_tag"; then
  step "base root filesystem from Debian packages (mmdebstrap)"
  mmdebstrap --variant=minbase --aptopt='APT::Install-Recommends "false"' \
    --include="$(echo "$packages" | tr ' ' ',')" \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$cache/base.tar" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"
  step "podman import"
  podman import --change 'CMD ["/bin/bash"]' "$cache/base.tar" "localhost/$base_tag" >/dev/null
  rm -f "$cache/base.tar"
fi

# shellcheck source=scripts/podman-flags.sh
source "$here/scripts/podman-flags.sh"

step "wheelhouse (the gateway and the runtime's PyPI libraries, for Python 3.11)"
context=$(mktemp -d "$cache/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
git -C "$here" ls-files -z | (cd "$here" && xargs -0 cp --parents -t "$context")
mkdir -p "$context/wheels"
python=/usr/bin/python3.11
pypi_libs=$(bash -c "source <(sed -n '/^full_runtime_pypi=/p' '$here/scripts/install.sh'); echo \${full_runtime_pypi[*]}")
# The runtime's libraries as binary wheels only: the image has no compiler.
read -ra pypi_list <<<"$pypi_libs"
# Pinned to the versions Debian ships in the base (as install.sh pins them), so that no PyPI wheel shadows
# numpy or pillow with a build that Debian's pandas, scipy and matplotlib were not compiled against.
podman "${podman_global[@]}" run --rm --network=none "${podman_limits[@]}" "localhost/$base_tag" /usr/bin/python3.11 -c '
import importlib.metadata as m
for name in ("numpy", "pillow", "pandas", "scipy", "matplotlib", "openpyxl", "python-dateutil", "pytz", "lxml"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass' >"$context/wheels/debian-constraints.txt"
quiet_pip() { "$python" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet_pip download -q --only-binary=:all: --constraint "$context/wheels/debian-constraints.txt" \
  --dest "$context/wheels" "${pypi_list[@]}"
quiet_pip wheel -q --wheel-dir "$context/wheels" "$here"

step "podman build $image"
podman "${podman_global[@]}" build "${podman_limits[@]}" --quiet --network=none --build-arg "BASE=localhost/$base_tag" --build-arg "RUNTIME_PYPI=$pypi_libs" \
  -t "$image" -f "$here/Containerfile" "$context" >/dev/null
step "built $image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
