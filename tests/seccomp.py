"""Run a command under the unit's SystemCallFilter, as systemd would, without systemd.

    python tests/seccomp.py -- dispenser run --config ...

The allowed set is computed from this machine's `systemd-analyze syscall-filter` (the
same tables systemd compiles the unit's filter from): the unit's allow-list groups,
minus its deny-list groups, plus what systemd always permits. Any other system call
fails with EPERM (SystemCallErrorNumber=EPERM), through libseccomp, as under systemd.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import subprocess
import sys

ALWAYS = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}  # systemd.exec(5)
SCMP_ACT_ALLOW = 0x7FFF0000


def groups() -> dict[str, list[str]]:
    """{"@group": [members, nested "@groups" included]} from systemd-analyze."""
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    text = subprocess.run([analyze, "syscall-filter", "--no-pager"], capture_output=True, text=True,
                          check=True, env=dict(os.environ, SYSTEMD_COLORS="0")).stdout
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^@\S+$", line):
            current = found.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#") and line.startswith(" "):
            current.append(line.strip())
    return found


def expand(names: list[str], table: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            out |= expand(table[name], table)
        else:
            out.add(name)
    return out


def allowed(allow: list[str], deny: list[str]) -> set[str]:
    table = groups()
    return (expand(allow, table) - expand(deny, table)) | ALWAYS


def unit_filter(unit_text: str) -> tuple[list[str], list[str]]:
    """The unit's SystemCallFilter= lines: (allowed groups/calls, denied ones)."""
    allow: list[str] = []
    deny: list[str] = []
    for line in unit_text.splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1].strip()
            (deny if value.startswith("~") else allow).extend(value.lstrip("~").split())
    return allow, deny


def install(names: set[str]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)  # SCMP_ACT_ERRNO(EPERM)
    if not ctx:
        raise OSError("seccomp_init failed")
    for name in sorted(names):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not a system call of this architecture
        lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, number, 0)
    if lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp_load failed")


def main() -> None:
    unit, _, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(unit, encoding="utf-8") as handle:
        names = allowed(*unit_filter(handle.read()))
    install(names)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
