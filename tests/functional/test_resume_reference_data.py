"""A resume refuses when a reference table in an SQLite database changed since the interrupted
run (the resumed pages would be checked or joined against other data than the first ones), and
continues when the table is as it was, whatever else changed in the database file."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from etrmflow.testing import EtrmflowProject, SandboxFactory, expected_trades

from . import REPO, TRADES, sandbox_project

BEARER = "{type: bearer, token: sandbox-token}"
REFUSED = "or a table of a reference database they read), so it cannot be resumed"


def execute(path: Path, *statements: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # each statement commits
        for statement in statements:
            db.execute(statement)


def failed_after_three_pages(project: EtrmflowProject) -> str:
    first = project.run("run", "pipelines/trades.yml")
    assert first.exit_code == 1, first.output
    result = project.pipeline_result()
    assert result["counts"]["pages"] == 3 and result["error_type"] == "RetriesExhausted"
    return str(result["run_id"])


def test_a_reference_data_table_that_changed_refuses_the_resume(etrmflow_project: EtrmflowProject,
                                                                sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    contract = (REPO / "contracts" / "trade.yml").read_text(encoding="utf-8")
    assert contract.count("\nrules:\n") == 1
    check = ("validators:\n  - {type: reference_data, field: currency, database: reference/static.db, "
             "table: currencies, column: code}\n")
    project.write({"contracts/trade.yml": contract.replace("\nrules:\n", f"\n{check}rules:\n")})
    static = project.path("reference/static.db")
    execute(static, "CREATE TABLE currencies (code TEXT, name TEXT)",
            "INSERT INTO currencies VALUES ('EUR', 'euro'), ('GBP', 'pound sterling'), ('USD', 'US dollar')")
    run_id = failed_after_three_pages(project)
    vendor.set_faults([])
    execute(static, "DELETE FROM currencies WHERE code = 'GBP'")  # GBP trades would now be quarantined

    refused = project.run("run", "--resume", "pipelines/trades.yml")

    assert refused.exit_code == 1, refused.output
    result = project.pipeline_result()
    assert (result["error_type"], result["exit_code"]) == ("ResumeError", 1)
    assert result["error"].startswith(f"trades changed since run {run_id} stopped") and REFUSED in result["error"]
    assert project.path("target/state/trades.json").exists()  # still resumable
    # The same rows again, inserted in another order and after a VACUUM: the same table.
    execute(static, "DELETE FROM currencies", "INSERT INTO currencies VALUES ('USD', 'US dollar')",
            "INSERT INTO currencies VALUES ('GBP', 'pound sterling'), ('EUR', 'euro')", "VACUUM")

    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["resumed_from_page"] == 3
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")


def test_a_join_table_that_changed_refuses_the_resume_but_the_sinks_tables_in_its_file_do_not(
        etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    database = project.path("target/etrmflow.db")  # the reference shares its file with the sink's table
    execute(database, "CREATE TABLE books (commodity TEXT, book TEXT)",
            "INSERT INTO books VALUES ('EL', 'POWER'), ('NG', 'GAS')")
    project.write({"pipelines/trades.yml": (
        "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
        "transforms:\n  - {type: join, database: target/etrmflow.db, table: books, on: [commodity], columns: [book]}\n"
        "sinks:\n  - {type: sqlite, path: target/etrmflow.db, table: trades}\n")})
    failed_after_three_pages(project)
    vendor.set_faults([])
    execute(database, "UPDATE books SET book = 'ELECTRICITY' WHERE commodity = 'EL'")

    refused = project.run("run", "--resume", "pipelines/trades.yml")

    assert refused.exit_code == 1, refused.output
    assert REFUSED in project.pipeline_result()["error"]
    execute(database, "UPDATE books SET book = 'POWER' WHERE commodity = 'EL'")

    # The trades table the first run wrote into the same file does not count: only the table read.
    resumed = project.run("run", "--resume", "pipelines/trades.yml")

    assert resumed.exit_code == 0, resumed.output
    assert project.pipeline_result()["resumed_from_page"] == 3
    project.assert_loaded_exactly(expected_trades(vendor.config), table="trades", pipeline="trades")
    assert set(project.query("SELECT DISTINCT commodity, book FROM trades")) == {("EL", "POWER"), ("NG", "GAS")}


def test_a_reference_database_that_went_missing_refuses_the_resume(etrmflow_project: EtrmflowProject,
                                                                   sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=TRADES, faults=["503:at=4,burst=20"])
    project = sandbox_project(etrmflow_project, vendor, auth=BEARER)
    books = project.path("reference/books.db")
    execute(books, "CREATE TABLE books (commodity TEXT, book TEXT)",
            "INSERT INTO books VALUES ('EL', 'POWER'), ('NG', 'GAS')")
    project.write({"pipelines/trades.yml": (
        "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"
        "transforms:\n  - {type: join, database: reference/books.db, table: books, on: [commodity], columns: [book]}\n")})
    failed_after_three_pages(project)
    vendor.set_faults([])
    books.rename(books.with_name("moved.db"))

    refused = project.run("run", "--resume", "pipelines/trades.yml")

    assert refused.exit_code == 1, refused.output
    assert REFUSED in project.pipeline_result()["error"]
    assert not books.exists()  # looked at read-only: no empty database created in its place
