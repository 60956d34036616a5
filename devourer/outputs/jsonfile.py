"""Writes JSON lines to a file (``-o file -w PATH``), appending, whole lines only."""


class JsonFileSink:
    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "ab", buffering=1 << 20)

    def write(self, lines: bytes) -> None:
        self._f.write(lines)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
