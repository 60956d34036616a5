"""Getting a run ready, before any child exists: what the supervisor does once, in order.

``Supervisor.run`` calls these in turn: ``refuse_unordered_cpu``, the sources are open
(``procs.capture.open_sources``), then ``choose_readers``, ``read_key_file``, the output is tried
(``outputs.check_output``), ``warm_up`` loads the compiled loops, and ``drop_privileges`` leaves root once
nothing more needs it. Each takes the settings and gives them back, changed where the step decided something.
"""

import dataclasses
import os

from devourer import jitcache
from devourer.errors import DevourerError, SourceError, UsageError
from devourer.flow import table
from devourer.ipc.ring import check_cpu
from devourer.outputs import format as record_format
from devourer.packet import bpf, capfile, chunks, decode
from devourer.privileges import drop_to, read_private_file
from devourer.settings import Settings


def refuse_unordered_cpu() -> None:
    """Raises DevourerError on a CPU the shared-memory rings are not correct on (``ipc.ring.check_cpu``)."""
    if (why := check_cpu()) is not None:
        raise DevourerError(why)


def choose_readers(settings: Settings, say) -> Settings:
    """Several readers only where the files can be cut into chunks; else one, saying why."""
    if settings.readers == 1 or settings.live:
        return settings
    why = "--bpf filters in one reader" if settings.bpf else chunks.chunkable(list(settings.read_files))
    if why is None:
        return settings
    say(f"reading with one reader: {why}", "info")
    return dataclasses.replace(settings, readers=1)


def read_key_file(settings: Settings) -> Settings:
    """The service-account key file, read once, by the supervisor, as whoever started devourer (the user of
    --user may not read it): not through a link at its end, and only a regular file of root's or that
    user's (``privileges.read_private_file``). The key travels in the settings, to the exporter alone."""
    if settings.output != "bigquery" or not settings.bigquery_sa_key_file or settings.bigquery_sa_key_data:
        return settings
    try:
        key = read_private_file(settings.bigquery_sa_key_file, settings.run_as)
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read --bigquery-sa-key-file {settings.bigquery_sa_key_file}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    return dataclasses.replace(settings, bigquery_sa_key_data=key)


def warm_up(settings: Settings) -> None:
    """Compile (or load from numba's cache) every hot loop once, before forking, so children inherit them:
    each module warms up its own (``warm_up`` beside the code it compiles)."""
    with jitcache.cached_loads():
        decode.warm_up()
        table.warm_up()
        record_format.warm_up()
        chunks.warm_up(planning=settings.readers > 1)
        capfile.warm_up()
        if settings.bpf:
            bpf.warm_up()


def drop_privileges(settings: Settings, say) -> Settings:
    """--user: become the user once the capture handles are open (tcpdump -Z). Nothing is handed over: the
    output, log and spool were opened with the user's rights (``privileges.acting_as``), and a service-account
    key file was read before (``read_key_file``)."""
    if settings.run_as is None:
        if settings.live and os.geteuid() == 0:
            say("capturing as root; use --user NAME to drop root once the interface is open, or run "
                "unprivileged with the capabilities CAP_NET_RAW and CAP_NET_ADMIN", "warning")
        return settings
    uid, gid, name = settings.run_as
    try:
        drop_to(uid, gid, name)
    except OSError as e:
        raise UsageError(f"--user {name}: cannot change to uid {uid} gid {gid}: {e.strerror}") from None
    folder = os.path.dirname(os.path.abspath(settings.write_file or "."))
    if (settings.rotate_bytes or settings.rotate_interval_s) and not os.access(folder, os.W_OK):
        raise SourceError(f"--user {name} cannot create files in {folder} (rotation makes new files there)")
    return settings
