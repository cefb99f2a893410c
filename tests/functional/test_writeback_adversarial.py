"""Write-back under hostile or unlucky conditions: the ``http`` sink books each row once, or
fails loudly; it never counts rows as posted that the vendor did not take."""

from __future__ import annotations

import json
from typing import Any

import pytest

from etrmflow.testing import EtrmflowProject, SandboxFactory
from etrmflow.testing.scripted import Answer, ScriptedRequest

from . import FAST_RETRY
from .test_writeback import writeback_project

NEW_PATH = "/api/v3/settlement-instructions"


def backoffice(answer: Any, scripted_vendor: Any, project: EtrmflowProject) -> Any:
    """The sink's connector points at a scripted vendor (the source stays the sandbox)."""
    vendor = scripted_vendor(answer)
    project.write({"connectors/backoffice.yml": ("name: backoffice\n"
                                                 "base_url: \"{{ env_var('BO_URL') }}\"\n"
                                                 "auth: {type: none}\n"
                                                 f"{FAST_RETRY}")})
    project.env["BO_URL"] = vendor.url
    return vendor


def booked_rows(vendor: Any) -> int:
    """Rows in the POSTs that reached the path that books them."""
    return sum(len(json.loads(r.body)["instructions"]) for r in vendor.requests
               if r.method == "POST" and r.path == NEW_PATH)


@pytest.mark.parametrize("status", [301, 302])
def test_a_post_redirected_with_301_or_302_is_never_counted_as_booked(
        status: int, etrmflow_project: EtrmflowProject, sandbox_vendor_factory: SandboxFactory,
        scripted_vendor: Any) -> None:
    # The endpoint moved: the old path answers every POST with a redirect and books nothing; the
    # new path books a POST and answers a GET with 200 (its listing). Following the redirect as
    # a GET (what browsers do with 301/302) and taking that 200 for the POST's answer lost every
    # row while the run reported them posted. The POST is refused, naming the new location.
    def answer(request: ScriptedRequest) -> Any:
        if request.path != NEW_PATH:
            return Answer(status=status, headers={"Location": NEW_PATH})
        if request.method == "POST":
            return Answer(body={"accepted": len(json.loads(request.body)["instructions"])}, status=201)
        return Answer(body=[], status=200)

    project = writeback_project(etrmflow_project, sandbox_vendor_factory(), sink_connector="backoffice")
    vendor = backoffice(answer, scripted_vendor, project)

    result = project.run("run", "pipelines/instructions.yml")

    assert result.exit_code == 1, result.output
    assert f"was redirected (status {status}) to {vendor.url}{NEW_PATH}: a {status} turns a POST into a GET" \
        in result.stdout
    assert project.pipeline_result()["counts"]["written"] == 0 == booked_rows(vendor)
    assert [r.path for r in vendor.requests if r.method == "GET"] == []
