# Sourced by scripts/build-image.sh and scripts/test-image.sh: podman flags this machine needs beside the
# image's own run flags (README.md, "Container image").
#   - podman_global: crun refuses a hybrid cgroup layout (cgroup v1 controllers next to a cgroup2 mount,
#     as on these machines: "cgroups in hybrid mode not supported"); runc runs it.
#   - podman_limits: podman asks for RLIMIT_NOFILE 1048576 by default, which a podman without
#     CAP_SYS_RESOURCE (or under a lower hard limit) cannot set; ask for what this shell may have.
podman_global=()
if [ -d /sys/fs/cgroup/memory ] && grep -q ' cgroup2 ' /proc/self/mounts && command -v runc >/dev/null; then
  podman_global=(--runtime runc)
fi
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
podman_limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096")
