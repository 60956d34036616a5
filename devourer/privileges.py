"""Privileges: Linux capabilities for live capture without root, and dropping root (--user/--group).

Where the interpreter carries the capture capabilities as *permitted* file
capabilities only (``setcap cap_net_raw,cap_net_admin+ip``, as the Docker image
does), they are not in effect until the process raises them. ``raise_capture_capabilities``
does that just before an interface is opened. Permitted-only (no ``+e``) keeps
the interpreter runnable where the container's bounding set lacks them
(``docker run`` without ``--cap-add NET_ADMIN``): the kernel refuses to exec a
binary whose *effective* file capabilities it cannot grant.
"""

import ctypes
import ctypes.util
import os

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def raise_capture_capabilities() -> bool:
    """Make CAP_NET_RAW and CAP_NET_ADMIN effective where they are permitted; True if both are now effective."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        header, data = _Header(_VERSION_3, 0), (_Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            return False
        wanted = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)  # both below 32: word 0
        if data[0].effective & wanted == wanted:
            return True
        data[0].effective |= data[0].permitted & wanted
        if libc.capset(ctypes.byref(header), data) != 0:
            return False
        return data[0].effective & wanted == wanted
    except (OSError, AttributeError):
        return False


def resolve_user(user: str, group: str | None) -> tuple[int, int, str]:
    """(uid, gid, name) for --user/--group; raises UsageError naming the flag."""
    import grp
    import pwd

    from devourer.errors import UsageError

    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else grp.getgrgid(int(group)).gr_gid
        except KeyError:
            raise UsageError(f"--group {group}: no such group") from None
    return entry.pw_uid, gid, entry.pw_name


def drop_to(uid: int, gid: int, name: str) -> None:
    """Become uid/gid for good (as tcpdump -Z does): supplementary groups of the user, then gid, then uid.

    Every capability goes with root (no keep-caps): what needed them is already open."""
    if os.getuid() == uid and os.geteuid() == uid:
        return
    os.initgroups(name, gid)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
