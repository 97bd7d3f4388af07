"""Loop devices and detached mounts, by system call: no ``losetup``/``mount(8)`` and no scan of every
loop device on the machine for each container.

Why by system call: ``mount -o loop`` lets util-linux look for an overlapping loop device by reading
the backing file of *every* loop device, and scanning ``/sys/block`` for the device that holds an
image does the same; both grow with the machine's loop devices (with 800 of them, a mount + unmount
took 43 ms instead of 9 ms here). ``LOOP_CTL_GET_FREE`` + ``LOOP_CONFIGURE`` attach in one step, and
the caller remembers which device it attached, so asking "is this image still attached?" reads one
device, not all of them.

- ``attach(image)``: a free loop device bound to ``image`` with ``LO_FLAGS_AUTOCLEAR``: the kernel
  detaches it by itself when its last user (an open fd, a mounted file system) goes away, so a
  killed process leaves no loop device behind.
- ``open_if_backing(name, image)``: open (and so pin: autoclear waits for the last close) a device
  that still holds exactly this file (same device and inode number, asked with ``LOOP_GET_STATUS64``).
- ``detached_mount(device)``: ``fsopen``/``fsconfig``/``fsmount``: a mount that is in no mount
  namespace's table, reachable only through its fd, gone when the fd is closed.
- ``holders(directory)``: one pass over the loop devices: which ones hold files under ``directory``
  (start-up reconciliation and ``sandbox gc`` only, never per container).

Must not: decide policy (which image, when) — ``disk.WorkspaceDisks`` does. Linux only (x86_64 and
arm64 share these syscall numbers: the new mount API was numbered for every architecture at once).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LOOP_GET_STATUS64 = 0x4C05
_LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64); number, encrypt_type,
# encrypt_key_size, flags (u32); file_name[64], crypt_name[64], encrypt_key[32]; init[2] (u64).
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
_ATTACH_ATTEMPTS = 32  # another process may take the free device between GET_FREE and CONFIGURE

_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOATIME = 0x2, 0x4, 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def attach(image: Path) -> tuple[str, int]:
    """Bind a free loop device to ``image`` (autoclear); returns its name (``loop7``) and an open fd
    on it, which pins it until closed."""
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR, os.fsencode(image)[:63], b"", b"", 0, 0)
        config = struct.pack("=II", backing, 0) + info + bytes(64)  # struct loop_config; __reserved[8]
        for _ in range(_ATTACH_ATTEMPTS):
            number = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
            name = f"loop{number}"
            fd = os.open(f"/dev/{name}", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(fd)
                if exc.errno != errno.EBUSY:
                    raise
                continue
            return name, fd
        raise OSError(errno.EBUSY, f"no free loop device after {_ATTACH_ATTEMPTS} attempts")
    finally:
        os.close(backing)
        os.close(ctl)


def open_if_backing(name: str, image: Path) -> int | None:
    """An fd on ``/dev/<name>`` if that device holds ``image`` (this very file, not an older one of
    the same name); else None."""
    try:
        st = image.stat()
        fd = os.open(f"/dev/{name}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, _LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
        device, inode = _LOOP_INFO64.unpack(raw)[:2]
        if (device, inode) == (st.st_dev, st.st_ino):
            return fd
    except OSError:  # ENXIO: not bound to anything (any more)
        pass
    os.close(fd)
    return None


def holders(directory: Path) -> dict[str, list[str]]:
    """``{backing file: [loop device names]}`` for every loop device holding a file under ``directory``
    (a file deleted meanwhile included, under its old path)."""
    prefix = str(directory).rstrip("/") + "/"
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return found
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
        except OSError:
            continue
        backing = backing.removesuffix(" (deleted)")
        if backing.startswith(prefix):
            found.setdefault(backing, []).append(name)
    return found


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


@contextlib.contextmanager
def detached_mount(device: str, fstype: str = "ext4") -> Iterator[int]:
    """Mount ``device`` (nosuid, nodev, noatime) where no mount table shows it; yields a directory fd
    on its root. Closing it unmounts (the kernel drops a detached mount with its last reference)."""
    fs = _check(_libc.syscall(_SYS_FSOPEN, fstype.encode(), _FSOPEN_CLOEXEC))
    try:
        _check(_libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, b"source", device.encode(), 0))
        _check(_libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0))
        attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOATIME
        mount = _check(_libc.syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, attrs))
    finally:
        os.close(fs)
    try:
        # fsmount gives an O_PATH fd; a real directory fd allows fchmod and *at() calls.
        root = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mount)
        try:
            yield root
        finally:
            os.close(root)
    finally:
        os.close(mount)
