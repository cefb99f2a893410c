"""A third-party validator, pip-installed as a real distribution, found through its entry point.

The plugin package is written into tmp_path with a ``pyproject.toml`` that declares
``[project.entry-points.etrmflow]``, installed with ``pip install --target`` (offline: no index,
no build isolation), and then used by the real CLI in a subprocess: ``etrmflow plugins`` lists
it with its distribution and version, and ``etrmflow run`` quarantines what it rejects.

The package builds with a tiny in-tree PEP 517 backend (``backend-path``) rather than
setuptools: setuptools before 70.1 needs the ``wheel`` package to build a wheel, and whether
that is installed should not decide whether this test can run offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import etrmflow
from etrmflow.sandbox.data import trade
from etrmflow.testing import SandboxFactory, sandbox_connector

pytest.importorskip("tomllib")  # the in-tree backend reads pyproject.toml with it (Python 3.11+)

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = Path(etrmflow.__file__).resolve().parents[1]
DISTRIBUTION, VERSION, ENTRY_POINT = "acme-etrm-checks", "0.4.2", "acme_checks"
LIMIT = 400

PYPROJECT = f"""\
[build-system]
requires = []
build-backend = "wheel_backend"
backend-path = ["."]

[project]
name = "{DISTRIBUTION}"
version = "{VERSION}"

[project.entry-points.etrmflow]
{ENTRY_POINT} = "acme_checks"
"""

PLUGIN = '''\
"""ACME's desk checks for etrmflow."""

import etrmflow
from etrmflow.components import Validator, Violation


class MaxVolumeValidator(Validator):
    """A trade's volume must not exceed the desk's limit.

    Example::

        validators:
          - {type: max_volume, limit: 400}
    """

    type_name = "max_volume"
    options_schema = {"type": "object", "additionalProperties": False, "required": ["limit"],
                      "properties": {"limit": {"type": "number", "description": "MWh per trade."}}}

    def validate(self, records):
        limit = self.options["limit"]
        return [[Violation(pointer="/volume_mwh", keyword="acme:max_volume", validator=self.type_name,
                           message=f"volume {r['volume_mwh']} MWh is above the desk limit of {limit}")]
                if isinstance(r.get("volume_mwh"), (int, float)) and r["volume_mwh"] > limit else []
                for r in records]


@etrmflow.hookimpl
def etrmflow_validator_types():
    return [MaxVolumeValidator]
'''

BACKEND = '''\
"""The smallest PEP 517 backend that builds a pure-Python wheel from [project]."""

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def get_requires_for_build_wheel(config_settings=None):
    return []


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    stem = f"{project['name'].replace('-', '_')}-{project['version']}"
    info = f"{stem}.dist-info"
    files = {p.as_posix(): p.read_bytes() for p in Path("acme_checks").rglob("*.py")}
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\\nName: {project['name']}\\n"
                                 f"Version: {project['version']}\\n").encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: wheel_backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\\n" + "".join(f"{name} = {target}\\n" for name, target in entries.items())
        for group, entries in project["entry-points"].items()).encode()
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The plugin distribution, pip-installed into its own folder."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "acme-etrm-checks"
    (source / "acme_checks").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (source / "wheel_backend.py").write_text(BACKEND, encoding="utf-8")
    (source / "acme_checks" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    target = root / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield target


def etrmflow_cli(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(site), str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "etrmflow", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, timeout=120, env={**os.environ, **env, "PYTHONPATH": path})


def test_pip_installed_the_distribution_with_its_entry_point(site: Path) -> None:
    info = site / f"acme_etrm_checks-{VERSION}.dist-info"
    assert (info / "INSTALLER").read_text(encoding="utf-8").strip() == "pip"
    assert (info / "entry_points.txt").read_text(encoding="utf-8") == f"[etrmflow]\n{ENTRY_POINT} = acme_checks\n"


def test_plugins_lists_it_with_its_distribution_and_version(site: Path, tmp_path: Path) -> None:
    listed = etrmflow_cli(site, tmp_path, "plugins")

    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.split()[:2] == ["validator", "max_volume"])
    assert f"{DISTRIBUTION} {VERSION} (entry point '{ENTRY_POINT}')" in line
    assert line.endswith("A trade's volume must not exceed the desk's limit.")


CONNECTOR = sandbox_connector(page_size=25)
PIPELINE = "name: trades\nsource: {connector: vendor, stream: trades}\ncontract: trade\n"


def test_its_violations_reach_the_dead_letters_of_a_run(site: Path, tmp_path: Path,
                                                        sandbox_vendor_factory: SandboxFactory) -> None:
    vendor = sandbox_vendor_factory(trades=80)
    contract = (REPO / "contracts" / "trade.yml").read_text(encoding="utf-8")
    for relative, text in {"etrmflow.yml": "name: plugin_project\n", "connectors/vendor.yml": CONNECTOR,
                           "pipelines/trades.yml": PIPELINE,
                           "contracts/trade.yml": contract.replace(
                               "\nrules:\n", f"\nvalidators:\n  - {{type: max_volume, limit: {LIMIT}}}\nrules:\n", 1)
                           }.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")

    run = etrmflow_cli(site, tmp_path, "run", "pipelines/trades.yml", SANDBOX_URL=vendor.base_url,
                       SANDBOX_KEY="sandbox-key")

    assert run.returncode == 0, run.stdout + run.stderr
    letters = [json.loads(line) for line in (tmp_path / "target/dead_letter/trades.jsonl").read_text().splitlines()]
    flagged = {letter["record"]["trade_id"]: violation for letter in letters for violation in letter["violations"]
               if violation["validator"] == "max_volume"}
    big = {record["trade_id"]: record["volume_mwh"] for record in (trade(i, vendor.config.seed) for i in range(80))
           if isinstance(record.get("volume_mwh"), float) and record["volume_mwh"] > LIMIT}
    assert len(big) == 43 and set(flagged) == set(big)
    some = min(big)
    assert flagged[some] == {"pointer": "/volume_mwh", "keyword": "acme:max_volume", "validator": "max_volume",
                             "message": f"volume {big[some]} MWh is above the desk limit of {LIMIT}"}
