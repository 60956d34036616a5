"""Output adapters: each takes JSON-lines bytes from the exporter and stores them.

Every sink has ``write(lines: bytes)``, ``flush()`` and ``close()``; ``open_sink``
is the one place that maps the ``--output`` setting to a sink."""

import os

from devourer.errors import SourceError
from devourer.settings import Settings


OUTPUT_MODE = 0o640  # flow records name who talked to whom: not for every local user


def open_sink(settings: Settings, report=None, counters=None):
    if settings.output == "bigquery":
        from devourer.outputs.bigquery import BigQuerySink

        return BigQuerySink(settings, report or (lambda text: None), counters)
    if settings.output == "file":
        from devourer.outputs.jsonfile import JsonFileSink

        return JsonFileSink(settings.write_file, settings.rotate_bytes, settings.rotate_interval_s,
                            settings.rotate_keep, report)
    from devourer.outputs.stdout import StdoutSink

    return StdoutSink()


def check_output(settings: Settings, warn) -> None:
    """Fail early (before any capture) when the output cannot be used."""
    if settings.output == "bigquery":
        from devourer.outputs import bigquery

        try:
            os.makedirs(settings.spool_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise SourceError(f"cannot create --spool-dir {settings.spool_dir}: {e.strerror}") from None
        bigquery.prepare(settings, warn)
    if settings.output == "file":
        try:
            os.close(os.open(settings.write_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, OUTPUT_MODE))
        except OSError as e:
            raise SourceError(f"cannot open output file {settings.write_file}: {e.strerror}") from None
