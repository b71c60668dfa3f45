"""An image's `User` ('name[:group]' or 'uid[:gid]') as numbers, from its /etc/passwd and /etc/group.

`parse_ids` is pure (file texts in); `ids_in_layers` reads the files from the
top-most layer dir that has them (a whiteout char device counts as absent).
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path


def _find(text: str, name: str) -> tuple[int, int] | None:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name and fields[2].isdigit():
            return int(fields[2]), int(fields[3]) if fields[3].isdigit() else 0
    return None


def parse_ids(user: str, *, passwd: str, group: str) -> tuple[int, int]:
    """(uid, gid) for `user`; ValueError naming what is missing."""
    if not user:
        return 0, 0
    name, _, grp = user.partition(":")
    if name.isdigit():
        uid = int(name)
        found = _find_uid(passwd, uid)
        gid = found[1] if found else 0
    else:
        entry = _find(passwd, name)
        if entry is None:
            raise ValueError(f"user {name!r} not in the image's /etc/passwd")
        uid, gid = entry
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            g = _find(group, grp)
            if g is None:
                raise ValueError(f"group {grp!r} not in the image's /etc/group")
            gid = g[0]
    return uid, gid


def _find_uid(passwd: str, uid: int) -> tuple[int, int] | None:
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2] == str(uid) and fields[3].isdigit():
            return uid, int(fields[3])
    return None


def _read_top(layer_dirs: Sequence[Path], rel: str) -> str:
    for layer in reversed(layer_dirs):
        path = layer / rel
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            return ""  # whited out
        if stat.S_ISREG(st.st_mode):
            return path.read_text(errors="replace")
    return ""


def ids_in_layers(layer_dirs: Sequence[Path], user: str) -> tuple[int, int]:
    """(uid, gid) of `user` in an image given by its layer dirs (lowest first)."""
    if not user:
        return 0, 0
    return parse_ids(
        user, passwd=_read_top(layer_dirs, "etc/passwd"), group=_read_top(layer_dirs, "etc/group")
    )
