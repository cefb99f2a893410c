"""Progress of ``etrmflow run`` and per-stage timings: live lines on a terminal, plain log lines
elsewhere, and a results file that says where the time went."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from etrmflow.cli.progress import LogProgress, TerminalProgress, choose_display, showing
from etrmflow.results import Progress
from etrmflow.testing import EtrmflowProject, SandboxFactory, sandbox_connector

STAGES = ["fetch", "validate", "quarantine", "transform", "write", "checkpoint"]
PIPELINE = "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
LOGGED = re.compile(r"^\d\d:\d\d:\d\d INFO    progress trades: pages (\d+), records (\d+) \(\d+\.\d/s\), "
                    r"quarantined (\d+), retries 0, open breakers 0$")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(pages: int, *, done: bool = False, name: str = "trades") -> Progress:
    return Progress(pipeline=name, pages=pages, records=pages * 10, quarantined=1, retries=2,
                    open_breakers=0, elapsed_s=2.0, done=done)


@pytest.fixture
def project(etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> EtrmflowProject:
    vendor = sandbox_vendor_factory(trades=65, faults=["slow:delay=0.02"])
    etrmflow_project.write({"connectors/vendor.yml": sandbox_connector(page_size=10), "pipelines/trades.yml": PIPELINE})
    etrmflow_project.copy_from(Path(__file__).parents[1], "contracts")
    etrmflow_project.env.update(SANDBOX_URL=vendor.base_url, SANDBOX_KEY="sandbox-key", CI=None)
    return etrmflow_project


# --- choosing a display ----------------------------------------------------------------------

@pytest.mark.parametrize(("stream", "environ", "fmt", "interval", "chosen"), [
    (FakeTty(), {}, "text", 10.0, TerminalProgress),
    (FakeTty(), {"CI": "false"}, "text", 10.0, TerminalProgress),
    (FakeTty(), {"CI": "true"}, "text", 10.0, LogProgress),
    (FakeTty(), {}, "json", 10.0, LogProgress),
    (io.StringIO(), {}, "text", 10.0, LogProgress),
    (FakeTty(), {}, "text", 0.0, type(None)),
    (io.StringIO(), {}, "json", 0.0, type(None)),
])
def test_the_display_suits_where_the_output_goes(stream: io.StringIO, environ: dict[str, str], fmt: str,
                                                 interval: float, chosen: type) -> None:
    assert type(choose_display(stream, environ, fmt, interval)) is chosen


# --- the terminal display, on a fake tty -----------------------------------------------------

def test_the_terminal_lines_are_redrawn_in_place_at_most_five_times_a_second() -> None:
    tty, clock = FakeTty(), FakeClock()
    display = TerminalProgress(tty, clock=clock)

    display(_progress(1))
    clock.now += 0.1
    display(_progress(2))  # too soon: remembered, not drawn
    display(_progress(1, name="other"))
    clock.now += 0.15
    display(_progress(3))

    line1 = "trades: pages 1, records 10 (5.0/s), quarantined 1, retries 2, open breakers 0"
    line3 = "trades: pages 3, records 30 (15.0/s), quarantined 1, retries 2, open breakers 0"
    other = "other: pages 1, records 10 (5.0/s), quarantined 1, retries 2, open breakers 0"
    assert tty.getvalue() == f"\x1b[2K{line1}\n" + f"\x1b[1F\x1b[J\x1b[2K{line3}\n\x1b[2K{other}\n"


def test_the_end_of_a_pipeline_is_always_drawn_and_the_lines_go_when_the_run_ends() -> None:
    tty, clock = FakeTty(), FakeClock()
    display = TerminalProgress(tty, clock=clock)
    with showing(display):
        display(_progress(1))
        display(_progress(4, done=True))

    done = "done trades: pages 4, records 40 (20.0/s), quarantined 1, retries 2, open breakers 0"
    assert tty.getvalue().endswith(f"\x1b[1F\x1b[J\x1b[2K{done}\n\x1b[1F\x1b[J")


def test_a_log_line_clears_the_live_lines_instead_of_being_overwritten() -> None:
    tty = FakeTty()
    handler = logging.StreamHandler(tty)
    logger = logging.getLogger("etrmflow")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    display = TerminalProgress(tty, clock=FakeClock())
    try:
        with showing(display):
            display(_progress(1))
            logging.getLogger("etrmflow.run").warning("schema drift")
            display(_progress(1, done=True))
        logging.getLogger("etrmflow.run").warning("after the run")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved

    line = "trades: pages 1, records 10 (5.0/s), quarantined 1, retries 2, open breakers 0"
    assert tty.getvalue() == (f"\x1b[2K{line}\n\x1b[1F\x1b[Jschema drift\n\x1b[2Kdone {line}\n"
                              f"\x1b[1F\x1b[Jafter the run\n")


# --- plain lines off a terminal --------------------------------------------------------------

def test_log_progress_writes_a_line_per_interval_and_none_for_the_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    display = LogProgress(10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="etrmflow.progress"):
        display(_progress(1))  # starts the interval
        clock.now += 9.9
        display(_progress(2))
        clock.now += 0.1
        display(_progress(3))
        clock.now += 10
        display(_progress(4, done=True))

    assert [r.getMessage() for r in caplog.records] == [
        "progress trades: pages 3, records 30 (15.0/s), quarantined 1, retries 2, open breakers 0"]
    assert (caplog.records[0].kind, caplog.records[0].pages, caplog.records[0].records_per_s) == ("progress", 3, 15.0)


def test_off_a_terminal_progress_is_plain_log_lines(project: EtrmflowProject) -> None:
    result = project.run("run", "--progress-interval", "0.001", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "progress" in line]
    assert lines and all(LOGGED.match(line) for line in lines), result.stderr
    pages = [int(LOGGED.match(line)[1]) for line in lines]
    assert pages == sorted(pages) and set(pages) <= set(range(1, 8))
    assert "\x1b" not in result.stderr + result.stdout


def test_json_logs_stay_one_object_per_line_with_progress_events(project: EtrmflowProject) -> None:
    result = project.run("--log-format", "json", "run", "--progress-interval", "0.001", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    events = [entry for entry in result.json_logs() if entry.get("kind") == "progress"]
    assert events, result.stderr
    assert {e["pipeline"] for e in events} == {"trades"}
    assert all(e["records"] == min(e["pages"] * 10, 65) and e["open_breakers"] == 0 for e in events)


def test_progress_interval_zero_prints_no_progress(project: EtrmflowProject) -> None:
    result = project.run("run", "--progress-interval", "0", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert "progress" not in result.stderr


# --- timings ---------------------------------------------------------------------------------

def test_timings_cover_every_stage_and_fit_in_the_duration(project: EtrmflowProject) -> None:
    result = project.run("run", "--progress-interval", "0", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    entry = project.pipeline_result()
    timings = entry["timings"]
    assert list(timings) == STAGES
    assert all(seconds >= 0 and round(seconds, 3) == seconds for seconds in timings.values())
    assert sum(timings.values()) <= entry["duration_s"] + 0.006
    assert timings["fetch"] >= 0.02  # at least one slow answer was waited for
    assert timings["validate"] > 0 and timings["write"] > 0
    shown = re.search(r"^       timings: (.*)$", result.stdout, re.MULTILINE)
    assert shown is not None, result.stdout
    assert shown[1] == ", ".join(f"{stage} {timings[stage]:.2f}s" for stage in STAGES)
