"""Output adapters: each takes JSON-lines bytes from the exporter and stores them.

Every sink has ``write(lines: bytes)``, ``flush()`` and ``close()``; ``open_sink``
is the one place that maps the ``--output`` setting to a sink."""

from devourer.errors import SourceError
from devourer.settings import Settings


def open_sink(settings: Settings):
    if settings.output == "file":
        from devourer.outputs.jsonfile import JsonFileSink

        return JsonFileSink(settings.write_file)
    from devourer.outputs.stdout import StdoutSink

    return StdoutSink()


def check_output(settings: Settings) -> None:
    """Fail early (before any capture) when the output cannot be opened."""
    if settings.output == "file":
        try:
            with open(settings.write_file, "ab"):
                pass
        except OSError as e:
            raise SourceError(f"cannot open output file {settings.write_file}: {e.strerror}") from None
