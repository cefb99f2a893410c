"""`etrmflow init VENDOR`: a new vendor's project that runs against the sandbox as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etrmflow.testing import EtrmflowProject

REPO = Path(__file__).resolve().parents[1]
CREATED = ["connectors/nordwind.yml", "contracts/nordwind_trade.yml", "etrmflow.yml",
           "pipelines/nordwind_trades.yml", "tests/test_nordwind.py"]


def fresh(etrmflow_project: EtrmflowProject) -> EtrmflowProject:
    """A project made by ``init`` in a new folder, with the vendor's variables unset."""
    result = etrmflow_project.run("init", "nordwind", "--dir", "fresh")
    assert result.exit_code == 0, result.output
    return EtrmflowProject(etrmflow_project.path("fresh"), env={
        "NORDWIND_BASE_URL": None, "NORDWIND_CLIENT_ID": None, "NORDWIND_CLIENT_SECRET": None})


def test_init_writes_the_project_files(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("init", "nordwind", "--dir", "fresh")

    assert result.exit_code == 0, result.output
    root = etrmflow_project.path("fresh")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == CREATED
    assert result.stdout.splitlines()[:5] == [f"created fresh/{name}" for name in
                                              ["etrmflow.yml", *CREATED[:2], *CREATED[3:]]]
    connector = (root / "connectors/nordwind.yml").read_text(encoding="utf-8")
    assert "base_url: \"{{ env_var('NORDWIND_BASE_URL', 'sandbox://nordwind') }}\"\n" in connector


def test_the_new_project_runs_against_the_sandbox(etrmflow_project: EtrmflowProject) -> None:
    project = fresh(etrmflow_project)

    result = project.run("run")

    assert result.exit_code == 0, result.output
    assert project.count("nordwind_trades") == 238
    assert len(project.dead_letters("nordwind_trades")) == 12
    assert project.run("test").exit_code == 0


def test_the_generated_test_file_passes(etrmflow_project: EtrmflowProject) -> None:
    project = fresh(etrmflow_project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORDWIND_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    completed = subprocess.run([sys.executable, "-m", "pytest", str(project.path("tests")), "-q",
                                "-p", "no:cacheprovider"], cwd=project.root, env=env,
                               capture_output=True, text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 passed" in completed.stdout


def test_init_never_overwrites(etrmflow_project: EtrmflowProject) -> None:
    project = fresh(etrmflow_project)
    project.write({"pipelines/nordwind_trades.yml": "# mine\n"})

    result = etrmflow_project.run("init", "nordwind", "--dir", "fresh")

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: not overwriting existing file(s): fresh/connectors/nordwind.yml, fresh/contracts/nordwind_trade.yml, "
        "fresh/pipelines/nordwind_trades.yml, fresh/tests/test_nordwind.py; nothing was written "
        "(choose another VENDOR or --dir)\n")
    assert project.path("pipelines/nordwind_trades.yml").read_text(encoding="utf-8") == "# mine\n"


def test_init_adds_a_vendor_to_an_existing_project_and_keeps_its_project_file(
        etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("init", "nordwind")

    assert result.exit_code == 0, result.output
    assert etrmflow_project.path("etrmflow.yml").read_text(encoding="utf-8") == "name: test_project\n"
    assert etrmflow_project.path("connectors/nordwind.yml").is_file()


def test_a_vendor_name_must_be_an_identifier(etrmflow_project: EtrmflowProject) -> None:
    result = etrmflow_project.run("init", "Nord-Wind GmbH")

    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: Invalid value for VENDOR: 'Nord-Wind GmbH' is not a valid vendor name: it names files, tables and "
        "environment variables, so use lower-case letters, digits and _, starting with a letter "
        "(did you mean 'nord_wind_gmbh'?)\n")
    assert not etrmflow_project.path("connectors").exists()


def written(project: EtrmflowProject) -> list[str]:
    """Every file in the project folder (a crash log too), relative to it."""
    return sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*") if p.is_file())


def test_a_vendor_name_too_long_for_its_file_names_is_refused_before_anything_is_written(
        etrmflow_project: EtrmflowProject) -> None:
    before = written(etrmflow_project)

    result = etrmflow_project.run("init", "a" * 245, "--dir", "fresh")

    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: Invalid value for VENDOR: a vendor name of 245 characters is too long: it goes into file names "
        "(pipelines/VENDOR_trades.yml), which file systems allow 255 bytes, so use at most 244 characters\n")
    assert written(etrmflow_project) == before


def test_a_vendor_name_of_the_longest_length_allowed_makes_its_files(etrmflow_project: EtrmflowProject) -> None:
    vendor = "a" * 244

    result = etrmflow_project.run("init", vendor, "--dir", "fresh")

    assert result.exit_code == 0, result.output
    assert etrmflow_project.path(f"fresh/pipelines/{vendor}_trades.yml").is_file()


@pytest.mark.parametrize("vendor", ["", ".", "..", "nord/wind", "nord\0wind"])
def test_a_vendor_name_that_is_no_file_name_is_refused(vendor: str, etrmflow_project: EtrmflowProject) -> None:
    before = written(etrmflow_project)

    result = etrmflow_project.run("init", vendor, "--dir", "fresh")

    assert result.exit_code == 2
    assert f"Error: Invalid value for VENDOR: {vendor!r} is not a valid vendor name" in result.stderr
    assert written(etrmflow_project) == before


@pytest.mark.parametrize(("directory", "problem"), [
    ("", "'' is empty: name the project folder, or leave --dir out for the current folder"),
    ("feeds/" + "d" * 256, "'dddddddddddddddddddd...' (256 bytes) is longer than the 255 bytes file systems allow a folder name"),
    ("feeds\0new", "'feeds\\x00new' holds a NUL character, which no file system allows in a name"),
])
def test_a_project_folder_that_cannot_be_made_is_refused_before_anything_is_written(
        directory: str, problem: str, etrmflow_project: EtrmflowProject) -> None:
    before = written(etrmflow_project)

    result = etrmflow_project.run("init", "nordwind", "--dir", directory)

    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: Invalid value for '--dir': {problem}\n")
    assert written(etrmflow_project) == before


def test_a_file_where_a_folder_of_the_project_goes_is_refused_before_anything_is_written(
        etrmflow_project: EtrmflowProject) -> None:
    etrmflow_project.write({"fresh/connectors": "not a folder\n"})
    before = written(etrmflow_project)

    result = etrmflow_project.run("init", "nordwind", "--dir", "fresh")

    assert result.exit_code == 2
    assert result.stderr == ("Error: not a folder: fresh/connectors, where the project's files go; nothing was "
                             "written (move it, or choose another --dir)\n")
    assert written(etrmflow_project) == before


def test_a_disk_that_fills_up_fails_init_with_the_reason_and_keeps_none_of_its_files(tmp_path: Path) -> None:
    def small_disk() -> None:  # a file size limit holds for root too, where a read-only folder does not
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-c", "from etrmflow.cli.main import main; main()", "init",
                                "nordwind", "--dir", "fresh"], cwd=tmp_path, env=env, preexec_fn=small_disk,
                               capture_output=True, text=True, timeout=60, check=False)

    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.startswith("Error: cannot write fresh/connectors/nordwind.yml: [Errno 27] File too "
                                       "large")
    assert completed.stderr.endswith("then run `etrmflow init` again; nothing was kept (the files written before "
                                     "it were removed)\n")
    assert completed.stdout == ""  # no "created" line for a file that is gone
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
