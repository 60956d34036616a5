"""Privileges: Linux capabilities for live capture without root, and dropping root (--user/--group).

With ``--user``, every file devourer writes (the output, rotated files, the log, the spool) is opened with the
user's rights, as tcpdump ``-Z`` opens its savefiles after dropping root: ``acting_as`` switches the effective
ids for the opening only. Root never creates, follows or hands over a path in a folder the user controls, so a
link planted there (``flows.jsonl -> /etc/shadow``) reaches nothing the user could not reach itself. What root
does read for the user (a service-account key file the user may not read) it reads only through folders the
user cannot write (``read_private_file``).

Where the interpreter carries the capture capabilities as *permitted* file
capabilities only (``setcap cap_net_raw,cap_net_admin+ip``, as the Docker image
does), they are not in effect until the process raises them. ``raise_capture_capabilities``
does that just before an interface is opened. Permitted-only (no ``+e``) keeps
the interpreter runnable where the container's bounding set lacks them
(``docker run`` without ``--cap-add NET_ADMIN``): the kernel refuses to exec a
binary whose *effective* file capabilities it cannot grant.
"""

import contextlib
import ctypes
import ctypes.util
import os
import stat

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


RunAs = tuple[int, int, str]  # (uid, gid, user name) of --user/--group


@contextlib.contextmanager
def acting_as(run_as: RunAs | None):
    """File operations inside run with the user's rights (effective uid, gid and groups); no-op without --user
    or when not root. Root's real and saved ids stay, so the ids come back afterwards."""
    if run_as is None or os.geteuid() != 0:
        yield
        return
    uid, gid, name = run_as
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups(os.getgrouplist(name, gid))
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


MAX_KEY_FILE_BYTES = 1 << 20


def read_private_file(path: str, run_as: RunAs | None) -> str:
    """A small secret file (a service-account key) read for the engine. Without --user, or where the user may
    read it itself, it is read with the user's rights: nothing to guard. Root reads it on the user's behalf only
    through folders the user cannot write, the path as given and where its links lead (a link the user planted,
    ``key.json -> /etc/shadow``, needs a folder it can write), and only a regular file of root's with one link.
    Raises OSError or ValueError (naming what is wrong)."""
    if run_as is None or os.geteuid() != 0:
        return _read_small(path)
    try:
        with acting_as(run_as):
            return _read_small(path)
    except PermissionError:
        pass
    if (open_to_user := _folder_open_to(path, run_as)) is not None:
        raise ValueError(f"the user of --user can change {open_to_user}, so root does not read through it")
    return _read_small(path, roots_only=True)


def _folder_open_to(path: str, run_as: RunAs) -> str | None:
    """The first folder on the way to path (as given, and as its links resolve) where the user could put or
    replace the next step, or None. A sticky folder the user can write (/tmp) is safe where the next step is
    not the user's: there the user may add entries but not replace others'."""
    for p in (os.path.abspath(path), os.path.realpath(path)):
        child = p
        while (folder := os.path.dirname(child)) != child:
            with acting_as(run_as):
                writable = os.access(folder, os.W_OK, effective_ids=True)
            if writable:
                sticky = os.stat(folder).st_mode & stat.S_ISVTX
                if not sticky or os.lstat(child).st_uid == run_as[0]:
                    return folder
            child = folder
    return None


def _read_small(path: str, roots_only: bool = False) -> str:
    """A regular file of at most MAX_KEY_FILE_BYTES; ``roots_only``: also root's, with a single link."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if roots_only and (st.st_nlink != 1 or st.st_uid != 0):
            raise ValueError("not a regular file of root's with a single link")
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f"larger than {MAX_KEY_FILE_BYTES:,} bytes")
    return data.decode("utf-8", "replace")


def scrub_environment(name: str) -> None:
    """Remove a secret variable from this process's environment, and overwrite its value where the kernel shows
    the environment (/proc/PID/environ reads the block the process started with, which unsetenv leaves as it
    is): children forked later inherit neither."""
    os.environ.pop(name, None)
    _scrub_block(name.encode() + b"=")


def _scrub_block(prefix: bytes) -> None:
    """Zero every ``NAME=value`` of the environment block the process started with (from /proc/self/stat's
    env_start to env_end)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        env_start, env_end = int(fields[47]), int(fields[48])  # fields 50 and 51 of proc(5); [0] is field 3
    except (OSError, IndexError, ValueError):
        return
    size = env_end - env_start
    if size <= 0:
        return
    block = ctypes.string_at(env_start, size)
    at = 0
    while (found := block.find(prefix, at)) >= 0:
        if found == 0 or block[found - 1] == 0:  # a whole entry, not the tail of another
            end = block.find(b"\0", found)
            end = size if end < 0 else end
            ctypes.memset(env_start + found + len(prefix), 0, end - found - len(prefix))
        at = found + len(prefix)
