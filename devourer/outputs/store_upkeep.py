"""The flow store's layout and upkeep: its hour folders and their flow files, compacting an hour's small files into one, and removing hours older than
``--store-retention``; both atomic for a reader, who sees an hour's folder whole before or whole after.

Compaction writes the merged file into a hidden sibling folder (``.hour=HH.new``, with the hour's
large files linked in), fsyncs it, and swaps the two folders in one step (``renameat2`` with
``RENAME_EXCHANGE``): a query lists either the old folder or the new one, never both, so no flow is
counted twice or missed; the old folder, now hidden, is then removed. A removed hour is first renamed
to a hidden name, then deleted. Hidden folders a crash left behind are removed at the next start: the
visible folder is complete in every case. The store has one writer (the capture that owns it); upkeep
runs in its exporter between batches.
"""

import ctypes
import ctypes.util
import datetime
import os
import re
import shutil
import stat
import time


COMPACT_AT = 12  # files in an hour folder that make it compacted
SMALL_FILE = 64 << 20  # bytes: files below this are merged, larger ones kept as they are
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_DATE = re.compile(r"^date=(\d{4})-(\d\d)-(\d\d)$")
_HOUR = re.compile(r"^hour=(\d\d)$")
_TEMPORARY = re.compile(r"^\..+\.parquet\.tmp$")  # a flow file being written
_LEFTOVER = re.compile(r"^\.(hour=\d\d|date=\d{4}-\d\d-\d\d)\.(new|old|expired)$")


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def exchange(a: str, b: str) -> None:
    """Swap the folders ``a`` and ``b`` in one step; raises OSError (ENOSYS or EINVAL where the kernel or the
    file system cannot)."""
    libc = _libc()
    if not hasattr(libc, "renameat2"):
        raise OSError(38, "renameat2 not available", a)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), a)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def flow_files(folder: str) -> list[str]:
    """The names of an hour folder's Parquet files (not hidden, regular)."""
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet") and not name.startswith("."):
            if stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
                out.append(name)
    return out


def compact(folder: str, file_mode: int, compression: str, row_group_rows: int,
            dictionary_columns: list[str]) -> int:
    """Merge the hour folder's small files into one; returns how many files were merged (0: too few)."""
    import pyarrow as pa  # here: queries import this module for the layout and need no pyarrow
    import pyarrow.parquet as pq

    names = flow_files(folder)
    sizes = {n: os.lstat(os.path.join(folder, n)).st_size for n in names}
    small, total = [], 0
    for n in sorted((n for n in names if sizes[n] < SMALL_FILE), key=sizes.get):
        if total + sizes[n] > 2 * SMALL_FILE:
            break  # what one compaction holds in memory is bounded; the rest waits for the next
        small.append(n)
        total += sizes[n]
    if len(names) < COMPACT_AT or len(small) < 2:
        return 0
    parent, hour = os.path.split(folder)
    new = os.path.join(parent, f".{hour}.new")
    shutil.rmtree(new, ignore_errors=True)
    os.mkdir(new, 0o750)
    for n in names:
        if n not in small:
            os.link(os.path.join(folder, n), os.path.join(new, n))
    table = pa.concat_tables([pq.read_table(os.path.join(folder, n)) for n in small], promote_options="default")
    path = os.path.join(new, f"compacted-{time.time_ns()}.parquet")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode)
    with os.fdopen(fd, "wb") as f:
        pq.write_table(table, f, compression=compression, row_group_size=row_group_rows,
                       use_dictionary=dictionary_columns)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(new)
    exchange(new, folder)  # the hour now holds the merged file; `new` the old files
    fsync_dir(parent)
    old = os.path.join(parent, f".{hour}.old")
    os.rename(new, old)
    shutil.rmtree(old)
    return len(small)


def hour_folders(directory: str):
    """(start of the hour, its folder) of every hour folder of the store, in time order: the store's layout,
    for upkeep and for queries alike."""
    for day in sorted(os.listdir(directory)):
        m = _DATE.match(day)
        day_path = os.path.join(directory, day)
        if not m or not _is_dir(day_path):
            continue
        try:
            date = datetime.datetime(*map(int, m.groups()), tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
        for hour in sorted(os.listdir(day_path)):
            h = _HOUR.match(hour)
            if h and _is_dir(os.path.join(day_path, hour)):
                yield date + datetime.timedelta(hours=int(h.group(1))), os.path.join(day_path, hour)


def expire(directory: str, before: datetime.datetime) -> int:
    """Remove the hours that ended before ``before`` (and days left empty); returns how many hours."""
    removed = 0
    for start, folder in list(hour_folders(directory)):
        if start + datetime.timedelta(hours=1) <= before:
            parent, hour = os.path.split(folder)
            gone = os.path.join(parent, f".{hour}.expired")
            os.rename(folder, gone)  # out of every query's sight in one step
            shutil.rmtree(gone)
            removed += 1
    for day in os.listdir(directory):
        path = os.path.join(directory, day)
        if _DATE.match(day) and _is_dir(path) and not os.listdir(path):
            os.rmdir(path)
    if removed:
        fsync_dir(directory)
    return removed


def remove_leftovers(directory: str) -> None:
    """Hidden folders of an upkeep and hidden files of a write that a crash interrupted (the visible ones
    are complete)."""
    for day in [directory] + [os.path.join(directory, d) for d in os.listdir(directory) if _DATE.match(d)]:
        if not _is_dir(day):
            continue
        for name in os.listdir(day):
            if _LEFTOVER.match(name) and _is_dir(os.path.join(day, name)):
                shutil.rmtree(os.path.join(day, name))
    for _, folder in hour_folders(directory):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if _TEMPORARY.match(name) and stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
