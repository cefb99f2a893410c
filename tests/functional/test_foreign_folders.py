"""A Parquet sink whose path is a folder someone else's files live in: every mode refuses it when
the sink opens (nothing fetched) and again at publish (files put there during the run), and the
files stay as they were. An empty folder, and a dataset etrmflow published before, keep working.
Also: a connector with TLS verification off is warned about once per run.

The real CLI runs in a temp project against a scripted vendor over loopback
(``test_undeclared_columns.Vendor``); every output is read back with pyarrow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from etrmflow.testing import EtrmflowProject
from etrmflow.testing.scripted import ScriptedVendor

from .test_undeclared_columns import (
    CONNECTOR,
    CONTRACT,
    Vendor,
    deals,
    pipeline,
    project_at,
)


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    yield server
    server.close()


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def deal_ids(folder: Path) -> list[str]:
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=["deal_id"])
    return sorted(table.column("deal_id").to_pylist())


def parquet_project(root: Path, vendor: Vendor, options: str) -> EtrmflowProject:
    return project_at(root, vendor, pipeline(f"  - {{type: parquet, path: precious{options}}}\n"))


MODES = {
    "replace": "",
    "append": ", mode: append",
    "replace_partition": ", mode: replace_partition, partition_by: [trade_day]",
    "replace, partitioned": ", partition_by: [trade_day]",
}

STRANGERS = {
    "a text file": {"data.txt": "do not delete\n"},
    "someone's parquet file": {"report.parquet": "not ours\n"},
    "a file in a partition folder": {"trade_day=2025-03-30/notes.md": "mine\n"},
    "a hidden folder": {".git/HEAD": "ref: refs/heads/main\n"},
    "a plain subfolder": {"archive/part-x.parquet": "old\n"},
}


@pytest.mark.parametrize("options", MODES.values(), ids=list(MODES))
@pytest.mark.parametrize("files", STRANGERS.values(), ids=list(STRANGERS))
def test_a_folder_holding_other_files_is_refused_before_anything_is_fetched(
        tmp_path: Path, vendor: Vendor, options: str, files: dict[str, str]) -> None:
    project = parquet_project(tmp_path, vendor, options)
    project.write({f"precious/{name}": text for name, text in files.items()})
    before = digests(project.path("precious"))
    vendor.pages = [deals(0, 4)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code != 0, result.output
    message = " ".join(result.output.split())  # the table wraps long lines
    assert str(project.path("precious")) in message, result.output
    assert "folder of its own" in message and "move those files away" in message, result.output
    first = next(iter(files)).split("/")[0]
    assert first in message, result.output  # what is in the way is named
    assert vendor.server.requests == []  # refused when the sink opened: nothing was fetched
    assert digests(project.path("precious")) == before
    assert not list(tmp_path.glob("precious.*"))  # no staging folder left behind


def test_a_file_at_the_path_and_a_link_in_the_folder_are_refused_too(tmp_path: Path, vendor: Vendor) -> None:
    project = parquet_project(tmp_path, vendor, "")
    project.write({"precious": "a file, not a folder\n", "elsewhere/keep.txt": "kept\n"})
    vendor.pages = [deals(0, 2)]

    as_file = project.run("run", "pipelines/trades.yml")

    assert as_file.exit_code != 0 and "is a file" in " ".join(as_file.output.split()), as_file.output
    assert project.path("precious").read_text() == "a file, not a folder\n"
    project.path("precious").unlink()
    project.path("precious").mkdir()
    (project.path("precious") / "part-linked.parquet").symlink_to(project.path("elsewhere/keep.txt"))

    with_link = project.run("run", "pipelines/trades.yml")

    assert with_link.exit_code != 0 and "part-linked.parquet" in with_link.output, with_link.output
    assert project.path("precious/part-linked.parquet").is_symlink()
    assert vendor.server.requests == []


def test_files_put_in_the_folder_during_the_run_stop_the_publish_and_stay(tmp_path: Path) -> None:
    folder = tmp_path / "precious"

    def answer(request: object) -> dict[str, object]:
        (folder / "data.txt").write_text("written while the run was fetching\n")
        return {"deals": deals(0, 4), "total_pages": 1}

    with ScriptedVendor(answer) as server:
        project = EtrmflowProject(tmp_path)
        project.write({"contracts/deal.yml": CONTRACT, "connectors/vendor.yml": CONNECTOR,
                       "pipelines/trades.yml": pipeline("  - {type: parquet, path: precious}\n")})
        project.env["VENDOR_URL"] = server.url
        folder.mkdir()

        result = project.run("run", "pipelines/trades.yml")

        assert len(server.requests) == 1
    assert result.exit_code != 0, result.output
    message = " ".join(result.output.split())
    assert "data.txt" in message and "folder of its own" in message, result.output
    assert digests(folder) == {"data.txt": hashlib.sha256(b"written while the run was fetching\n").hexdigest()}
    assert list(tmp_path.glob("precious.staging-*"))  # the rows stay staged for a resume


@pytest.mark.parametrize("options", MODES.values(), ids=list(MODES))
def test_an_empty_folder_is_written(tmp_path: Path, vendor: Vendor, options: str) -> None:
    project = parquet_project(tmp_path, vendor, options)
    project.path("precious").mkdir()
    vendor.pages = [deals(0, 3), deals(3, 2)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert deal_ids(project.path("precious")) == ["D000", "D001", "D002", "D003", "D004"]


@pytest.mark.parametrize("options", [MODES["replace"], MODES["replace, partitioned"]], ids=["flat", "partitioned"])
def test_replace_over_its_own_earlier_output_replaces_it(tmp_path: Path, vendor: Vendor, options: str) -> None:
    project = parquet_project(tmp_path, vendor, options)
    vendor.pages = [deals(0, 3, day="2025-03-29"), deals(3, 3, day="2025-03-30")]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    (project.path("precious") / ".DS_Store").write_bytes(b"\0")  # a file browser looked in
    vendor.pages = [deals(10, 2, day="2025-03-31")]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert deal_ids(project.path("precious")) == ["D010", "D011"]


def test_append_and_replace_partition_keep_working_on_their_own_datasets(tmp_path: Path, vendor: Vendor) -> None:
    sinks = ("  - {type: parquet, path: out/appended, mode: append}\n"
             "  - {type: parquet, path: out/by_day, mode: replace_partition, partition_by: [trade_day]}\n")
    project = project_at(tmp_path, vendor, pipeline(sinks))
    vendor.pages = [deals(0, 2, day="2025-03-29"), deals(2, 2, day="2025-03-30")]
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    vendor.pages = [deals(10, 2, day="2025-03-30")]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    assert deal_ids(project.path("out/appended")) == ["D000", "D001", "D002", "D003", "D010", "D011"]
    assert deal_ids(project.path("out/by_day")) == ["D000", "D001", "D010", "D011"]


def test_a_csv_path_that_is_a_folder_is_still_refused(tmp_path: Path, vendor: Vendor) -> None:
    project = project_at(tmp_path, vendor, pipeline("  - {type: csv, path: precious}\n"))
    project.write({"precious/data.txt": "do not delete\n"})
    vendor.pages = [deals(0, 2)]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code != 0 and "is a folder" in " ".join(result.output.split()), result.output
    assert vendor.server.requests == []
    assert digests(project.path("precious")) == {"data.txt": hashlib.sha256(b"do not delete\n").hexdigest()}


# --- TLS verification off: one warning per connector and run ---------------------------------------

def test_tls_verification_off_is_warned_about_once_per_connector_and_run(tmp_path: Path, vendor: Vendor) -> None:
    project = project_at(tmp_path, vendor, pipeline("  - {type: parquet, path: out/first}\n"))
    second = pipeline("  - {type: parquet, path: out/second}\n").replace("name: trades", "name: again")
    project.write({"connectors/vendor.yml": CONNECTOR.replace("auth: {type: none}\n",
                                                              "auth: {type: none}\ntls: {verify: false}\n"),
                   "pipelines/again.yml": second})
    vendor.pages = [deals(0, 2)]
    warning = "TLS verification is OFF for connector vendor"

    for args in (["pipelines/trades.yml"], ["pipelines/trades.yml", "pipelines/again.yml"]):
        result = project.run("run", *args)

        assert result.exit_code == 0, result.output
        assert result.output.count(warning) == 1, result.output
