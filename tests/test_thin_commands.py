"""The seams between the commands and the core: what each side may import, and the pieces they share.

A command module renders and asks; the core decides and raises. These tests
keep it so: no command imports another, the core modules that the commands
lean on import neither rich nor typer, and the shared pieces (stop signals,
the metrics log, the run-time estimates) behave as the commands rely on.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tinyshake.store import paths
from tinyshake.training import estimates
from tinyshake.cli._signals import INTERRUPT_EXIT, StopFlag, handling
from tinyshake.errors import UsageError
from tinyshake.training.metrics import MetricsLog

CLI = Path(__file__).resolve().parents[1] / "tinyshake" / "cli"
COMMANDS = sorted(p.stem for p in CLI.glob("*.py") if not p.stem.startswith("_"))


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever in the file (commands import lazily inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_module_imports_another(command):
    others = {f"tinyshake.cli.{name}" for name in COMMANDS if name != command}
    assert not _imported_modules(CLI / f"{command}.py") & others


def test_the_core_modules_of_the_commands_import_neither_rich_nor_typer_nor_torch():
    code = ("import sys; import tinyshake.training.metrics, tinyshake.training.estimates, tinyshake.session; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_stop_flag_asks_once_then_aborts_and_is_quiet_once_saved():
    told: list[str] = []
    flag = StopFlag(told.append)
    assert not flag.requested and flag.exit_code == INTERRUPT_EXIT
    flag(signal.SIGTERM, None)
    assert flag.requested and flag.exit_code == 128 + signal.SIGTERM and told == ["SIGTERM"]
    with pytest.raises(KeyboardInterrupt):
        flag(signal.SIGINT, None)
    flag.saved = True
    flag(signal.SIGINT, None)  # ignored: the checkpoint is saved, only the resume hint is left to print
    assert told == ["SIGTERM"]


def test_handlers_are_in_place_inside_the_block_and_put_back_after():
    before = signal.getsignal(signal.SIGTERM)
    hits: list[int] = []
    with handling(lambda signum, frame: hits.append(signum), (signal.SIGTERM,)) as installed:
        assert installed
        signal.raise_signal(signal.SIGTERM)
    assert hits == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("seconds, words", [(5, "5 s"), (600, "10 min"), (7200, "2.0 h"), (30 * 86400, "30 days")])
def test_durations_read_as_people_say_them(seconds, words):
    assert estimates.duration(seconds) == words


def test_a_metrics_file_inside_the_data_home_is_a_usage_error(home):
    runs = paths.runs_root()
    runs.mkdir(parents=True)
    with pytest.raises(UsageError, match="inside tinyshake's data folder"):
        MetricsLog(runs / "metrics.jsonl", resume=False)
    with pytest.raises(UsageError, match="its folder does not exist"):
        MetricsLog(home.parent / "missing" / "metrics.jsonl", resume=False)  # the whole home is refused first
    assert MetricsLog(None, resume=False).path is None
