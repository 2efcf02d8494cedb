"""The console: tqdm bars from worker events on a terminal, plain lines elsewhere; the launcher's
forwarding of a real subprocess's event lines (kept out of its log)."""

from __future__ import annotations

import io
import sys

from bench.core.records import Phase, RunRecord, Status
from bench.orchestration.console import Console
from bench.orchestration.launch import Launcher


def record(cell: str, phase: str) -> RunRecord:
    return RunRecord(cell_key="k", cell_id=cell, cell={}, phase=Phase(phase), status=Status.OK,
                     started_at="", finished_at="", wall_s=1.0, matrix="m")  # fmt: skip


def test_not_a_terminal_gives_lines_only():
    out = io.StringIO()
    console = Console(2, stream=out)
    assert not console.bars  # a StringIO is no terminal: CI logs stay line-based
    console.line("[1/2] train c1")
    console.worker_event({"cell": "c1", "phase": "train", "done": 1, "total": 4, "loss": 7.1})
    console.record_written(record("c1", "train"))
    console.close()
    assert out.getvalue() == "[1/2] train c1\n"


def test_bars_show_steps_with_loss_and_rate_then_the_matrix_advances():
    out = io.StringIO()
    console = Console(2, stream=out, bars=True)
    for done in range(5):
        console.worker_event({"cell": "c1", "phase": "train", "done": done, "total": 4, "loss": 7.25,
                              "tokens_per_s": 640})  # fmt: skip
    text = out.getvalue()
    assert "train c1" in text and "4/4" in text and "loss=7.25" in text and "tokens_per_s=640" in text
    console.record_written(record("c1", "train"))
    assert not console.running
    console.worker_event({"cell": "c1", "phase": "eval", "done": 0, "total": 48})
    console.worker_event({"cell": "c1", "phase": "eval", "done": 16, "total": 48})
    console.line("a line above the bars")
    console.close()
    text = out.getvalue()
    assert "16/48" in text and "row" in text and "1/2" in text and "a line above the bars" in text


def test_the_launcher_forwards_event_lines_and_keeps_them_out_of_the_log(tmp_path):
    events = []
    launcher = Launcher(tmp_path, tmp_path, "m", echo=False, on_event=events.append)
    code = (
        'print(\'event: {"cell": "c1", "phase": "train", "done": 1, "total": 2}\');'
        'print(\'event: {"cell": "c1", "pha\');'  # cut short by a dying worker: skipped
        "import sys; sys.stdout.write('bar 50%\\r');"  # another progress bar's unfinished line
        'print(\'event: {"cell": "c1", "done": 2}\');'
        "print('progress: step 1/2 loss 7.0')"
    )
    returncode, timed_out = launcher.run_process([sys.executable, "-c", code], tmp_path / "x.log", 60,
                                                 tmp_path / "x.pid")  # fmt: skip
    assert (returncode, timed_out) == (0, False)
    assert events == [{"cell": "c1", "phase": "train", "done": 1, "total": 2}, {"cell": "c1", "done": 2}]
    log = (tmp_path / "x.log").read_text().splitlines()[1:]  # below the command line
    assert log == ["bar 50%", "progress: step 1/2 loss 7.0"]
