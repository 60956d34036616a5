"""The progress bar of a replay (tqdm, on stderr, only when stderr is a terminal).

The supervisor updates it from the shared counters on each tick: bytes of the
capture files consumed (capture's ``C_INPUT_BYTES``) against their total size,
so the time left is tqdm's estimate from the byte rate; packets/s and flows in
the postfix. A pipe has no size: the bar then shows bytes and rates only.
"""

import os
import stat
import sys
import time

from tqdm import tqdm


def wanted(settings, stream=sys.stderr) -> bool:
    return settings.progress and not settings.live and stream.isatty()


def input_size(paths) -> int | None:
    """Total bytes of the capture files, or None when one is a pipe (no size known)."""
    total = 0
    for path in paths:
        try:
            st = os.stat(path) if path != "-" else os.fstat(0)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        total += st.st_size
    return total


class ProgressBar:
    def __init__(self, total_bytes: int | None, stream=sys.stderr, clock=time.monotonic):
        try:
            sized = os.get_terminal_size(stream.fileno()).columns > 0
        except (OSError, ValueError):
            sized = False
        # a terminal that reports no width (some ptys) would get an empty bar: assume 100 columns there
        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
                        desc="devourer", dynamic_ncols=sized, ncols=None if sized else 100, mininterval=0.25,
                        smoothing=0.3, leave=True)
        self.clock = clock
        self.last_t = clock()
        self.last_packets = 0
        self.pps = 0.0
        self.measured = False  # a whole half-second window has passed

    def update(self, input_bytes: int, packets: int, flows_written: int, active_flows: int) -> None:
        now = self.clock()
        dt = now - self.last_t
        if dt >= 0.5:
            self.pps = (packets - self.last_packets) / dt
            self.last_t, self.last_packets = now, packets
        elif not self.measured and dt >= 0.1 and packets:  # the first half second: the rate so far, not 0
            self.pps = (packets - self.last_packets) / dt
        self.measured = self.measured or dt >= 0.5
        self.bar.set_postfix_str(f"{self.pps:,.0f} packets/s, {flows_written + active_flows:,} flows", refresh=False)
        self.bar.update(max(0, input_bytes - self.bar.n))

    def writing(self):
        """Context in which a log line may be written to the same terminal (clears the bar, redraws it after)."""
        return self.bar.external_write_mode(file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()
