"""A resumed run fetches again the page it was writing when it stopped. The vendor may send it
with another body (a ``generated_at`` stamp, as many APIs add), so another hash: the page keeps
the batch id it had (``state/<pipeline>.in_flight.json``), and its rows replace those the
interrupted attempt wrote, in every sink, keyless ones included."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.dataset as ds
import pytest

from etrmflow.testing import EtrmflowProject, PostgresDatabase
from etrmflow.testing.scripted import Answer, ScriptedRequest

PRICE_CONTRACT = """\
name: price
version: "1"
schema:
  type: object
  required: [area, hour, price]
  properties:
    area: {type: string}
    hour: {type: integer}
    price: {type: number}
"""
VENDOR = """\
name: vendor
base_url: "{{ env_var('VENDOR_URL') }}"
auth: {type: none}
streams:
  prices:
    path: /prices
    records: $.prices
    paginator: {type: page_number, param: page, total_pages: $.total_pages}
"""
PG_DSN = ("postgresql://postgres:{{ secret('PG_PASSWORD') }}@127.0.0.1:{{ env_var('PG_PORT') }}/"
          "{{ env_var('PG_DATABASE') }}")
FIRST_SINKS = {
    "sqlite_append": "{type: sqlite, table: prices, mode: append}",
    "postgres_append": f"{{type: postgres, dsn: \"{PG_DSN}\", table: prices, mode: append}}",
    "parquet_append": "{type: parquet, path: target/prices, mode: append}",
    "csv": "{type: csv, path: target/prices.csv}",
}


def stamping_vendor(scripted_vendor: Any) -> Any:
    """Two pages of two prices, each answer stamped anew; the second POST (page 2's) fails."""
    served = {"pages": 0, "posts": 0}

    def answer(request: ScriptedRequest) -> Any:
        if request.method == "POST":
            served["posts"] += 1
            return Answer(status=400, body={"error": "try later"}) if served["posts"] == 2 else Answer(status=201)
        served["pages"] += 1
        page = int(request.query.get("page", "1"))
        return {"generated_at": f"2025-03-30T10:00:{served['pages']:02d}Z", "total_pages": 2,
                "prices": [{"area": "DE", "hour": 2 * page + h, "price": 40.5 + h} for h in range(2)]}

    return scripted_vendor(answer)


def hours(project: EtrmflowProject, sink: str, database: PostgresDatabase | None) -> list[int]:
    if sink == "sqlite_append":
        return sorted(hour for (hour,) in project.query("SELECT hour FROM prices"))
    if sink == "postgres_append":
        assert database is not None
        return sorted(hour for (hour,) in database.query("SELECT hour FROM prices"))
    if sink == "parquet_append":
        return sorted(ds.dataset(project.path("target/prices"), format="parquet").to_table()["hour"].to_pylist())
    lines = project.path("target/prices.csv").read_text().splitlines()
    at = lines[0].split(",").index("hour")
    return sorted(int(line.split(",")[at]) for line in lines[1:])


@pytest.mark.parametrize("sink", sorted(FIRST_SINKS))
def test_a_page_fetched_again_with_another_stamp_replaces_its_rows(
        sink: str, etrmflow_project: EtrmflowProject, scripted_vendor: Any, request: pytest.FixtureRequest) -> None:
    # Page 2 reaches the first sink, then the http sink fails on it: no checkpoint after it.
    vendor = stamping_vendor(scripted_vendor)
    project = etrmflow_project
    project.write({"contracts/price.yml": PRICE_CONTRACT, "connectors/vendor.yml": VENDOR,
                   "pipelines/prices.yml": ("name: prices\nsource: {connector: vendor, stream: prices}\n"
                                            f"contract: price\nsinks:\n  - {FIRST_SINKS[sink]}\n"
                                            "  - {type: http, connector: vendor, path: /book}\n")})
    project.env["VENDOR_URL"] = vendor.url
    database = None
    if sink == "postgres_append":
        database = request.getfixturevalue("postgresql_database")
        project.env.update(PG_PASSWORD=database.password, PG_PORT=str(database.port), PG_DATABASE=database.dbname)

    failed = project.run("run", "pipelines/prices.yml")
    assert failed.exit_code == 1, failed.output
    noted = project.read_json("target/state/prices.in_flight.json")
    resumed = project.run("run", "--resume", "pipelines/prices.yml")

    assert resumed.exit_code == 0, resumed.output
    assert hours(project, sink, database) == [2, 3, 4, 5]
    written = [json.loads(line) for line in project.path("target/audit/audit.jsonl").read_text().splitlines()]
    page_two = {e["batch_id"] for e in written if e["event"] == "batch_written" and e["run_id"] == noted["run_id"]}
    assert noted["batch_id"] in page_two
    assert not project.path("target/state/prices.in_flight.json").exists()
