"""Parquet partition values come back as they were sent: a record without a value in a
``partition_by`` column reads back as null, an empty text as empty text, and the one text that
names the folder of records with no value, ``__HIVE_DEFAULT_PARTITION__``, is refused rather than
read back as null (and, in ``replace_partition`` mode, put in place of those records).

The vendor serves pages over loopback (``test_undeclared_columns.Vendor``) and the real CLI runs
in a temp project; the output is read back by pyarrow.dataset, hive partitioning, as the
dataset's readers read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from .test_parquet_schema_edges import digests
from .test_undeclared_columns import Vendor, deals, pipeline, project_at

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
SINK = "  - {type: parquet, path: target/deals, mode: replace_partition, partition_by: [venue]}\n"


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    yield server
    server.close()


def venues(folder: Path) -> list[tuple[Any, ...]]:
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=["deal_id", "venue"])
    return sorted((row["deal_id"], row["venue"]) for row in table.to_pylist())


def test_missing_empty_and_path_like_partition_values_read_back_as_they_were_sent(
        tmp_path: Path, vendor: Vendor) -> None:
    sent = [None, "", "EEX", "a/b", "..", "x%2Fy"]
    vendor.pages = [[{**deal, "venue": venue} for deal, venue in zip(deals(0, len(sent)), sent, strict=True)]]
    project = project_at(tmp_path, vendor, pipeline(SINK))

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 0, result.output
    folder = project.path("target/deals")
    assert sorted(p.name for p in folder.iterdir()) == [
        "venue=", "venue=..", "venue=EEX", f"venue={HIVE_NULL}", "venue=a%2Fb", "venue=x%252Fy"]
    assert venues(folder) == [(f"D00{n}", venue) for n, venue in enumerate(sent)]


def test_the_text_that_names_the_folder_of_missing_values_fails_its_page_and_changes_nothing(
        tmp_path: Path, vendor: Vendor) -> None:
    vendor.pages = [[*deals(0, 2, venue=None), *deals(2, 1, venue="EEX")]]
    project = project_at(tmp_path, vendor, pipeline(SINK))
    assert project.run("run", "pipelines/trades.yml").exit_code == 0
    folder = project.path("target/deals")
    published = digests(folder)
    # A later run: the vendor sends the folder's name as a venue, which would replace D000 and D001.
    vendor.pages = [deals(10, 1, venue="EPEX"), [*deals(11, 2, venue=HIVE_NULL), *deals(13, 1, venue="EEX")]]

    result = project.run("run", "pipelines/trades.yml")

    assert result.exit_code == 1
    assert (f"partition column venue holds the text '{HIVE_NULL}' in 2 records: that is the name of the folder "
            f"of the records without a venue, which readers (pyarrow, pandas, Spark, Hive) read back as "
            f"empty, so these values would be lost, and the folder's records replaced by them; give them "
            f"another value in a step (derive), or partition by another column") in result.output, result.output
    assert digests(folder) == published
    assert venues(folder) == [("D000", None), ("D001", None), ("D002", "EEX")]
