"""The structure docs/architecture.md describes, held by tests: dependency direction, contracts, sizes.

These read the package's source (ast), so a change that breaks the layout fails here with the module and line,
not in a review months later.
"""

import ast
import inspect
from pathlib import Path

import multiprocess
import pytest

from devourer import counters as CN
from devourer.errors import EXIT_FAILURE
from devourer.outputs import Sink
from devourer.procs.common import run_child
from devourer.procs.report import Reason, Role

PACKAGE = Path(__file__).resolve().parent.parent / "devourer"
CORE_PACKAGES = ("packet", "flow", "names", "ipc")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth (imports inside functions too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_no_core_package_imports_a_process_or_the_engine(package):
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for path in (PACKAGE / package).rglob("*.py") for line, module in _imports(path)
             if module.startswith(("devourer.procs", "devourer.engine"))]
    assert wrong == []


def test_ipc_knows_nothing_of_packet_records():
    wrong = [f"{path.name}:{line} imports {module}" for path in (PACKAGE / "ipc").rglob("*.py")
             for line, module in _imports(path) if module.startswith(("devourer.packet", "devourer.flow"))]
    assert wrong == []


def test_no_output_is_probed_for_what_it_can_do():
    """The exporter drives its sink through the Sink protocol only."""
    tree = ast.parse((PACKAGE / "procs" / "exporter.py").read_text())
    probes = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")]
    assert probes == []


def test_every_output_implements_the_sink_protocol():
    from devourer.outputs.bigquery import BigQuerySink
    from devourer.outputs.jsonfile import JsonFileSink
    from devourer.outputs.stdout import StdoutSink
    from devourer.outputs.store import ParquetStoreSink

    wanted = {name for name, _ in inspect.getmembers(Sink, inspect.isfunction) if not name.startswith("_")}
    assert wanted == {"write", "flush", "tick", "unsettled", "reopen", "close"}
    for sink in (StdoutSink, JsonFileSink, BigQuerySink, ParquetStoreSink):
        missing = [m for m in wanted if not callable(getattr(sink, m, None))]
        assert missing == [], sink.__name__


def test_the_supervisor_stays_a_table_of_contents():
    assert len((PACKAGE / "engine" / "supervisor.py").read_text().splitlines()) < 300


def test_no_function_is_over_100_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for path in _modules() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100]
    assert long == []


def test_every_module_says_what_lives_there():
    bare = [str(path.relative_to(PACKAGE.parent)) for path in _modules()
            if path.name != "__init__.py" and not ast.get_docstring(ast.parse(path.read_text()))]
    assert bare == []


def test_every_counter_is_shown_in_the_summary_stats_or_metrics():
    shown = "".join((PACKAGE / "engine" / name).read_text() for name in ("summary.py", "metrics.py"))
    counters = [name for name in vars(CN) if name[:2] in ("C_", "K_", "R_", "E_")]
    assert len(counters) > 30
    assert [name for name in counters if name not in shown] == []


def _raise(parent: int) -> int:
    raise KeyError("no such thing")


def test_a_child_that_fails_unexpectedly_reports_with_its_role_and_exits_with_failure():
    ctx = multiprocess.get_context("fork")
    reports = ctx.Queue()
    child = ctx.Process(target=run_child, args=(Role("worker", 2), _raise, reports))
    child.start()
    child.join(60)
    report = reports.get(timeout=10)
    assert child.exitcode == EXIT_FAILURE
    assert report.role == Role("worker", 2) and str(report.role) == "worker 2"
    assert report.reason is Reason.CRASHED and report.level == "error"
    assert "KeyError" in report.text and "no such thing" in report.text and "test_structure.py" in report.text
