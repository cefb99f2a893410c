"""The YAML in the user documentation is checked by the real ``etrmflow validate``.

A ```yaml block in ``docs/*.md`` whose first line is a marker comment naming its file is a
complete document, and must validate:

    # connectors/<name>.yml    a connector     (validated through a pipeline reading its first stream)
    # contracts/<name>.yml     a contract      (validated through a pipeline applying it to the example trades)
    # pipelines/<name>.yml     a pipeline      (validated as it is)
    # etrmflow.yml             a project file  (validated with the example pipeline)

Each block is checked in a fresh copy of the example project, after the marked blocks that come
before it on the same page have been written too, so a page can build a connector, a contract
and a pipeline step by step. The file name must match the document's ``name:``, because that is
the file etrmflow looks for first. Blocks without a marker are snippets and are only required to
be YAML. Every key of the document schemas must be explained on its page, and the command-line
page must mention every command, option and exit code that exists.
"""

from __future__ import annotations

import logging
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from etrmflow.cli.main import cli, run_cli
from etrmflow.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
EXAMPLE_PROJECT = ("etrmflow.yml", "connectors", "contracts", "pipelines")

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"^#\s*(?P<path>(?P<folder>connectors|contracts|pipelines)/(?P<stem>[a-z][a-z0-9_]*)\.ya?ml"
                    r"|etrmflow\.yml)\s*$")
LOOKS_LIKE_MARKER = re.compile(r"^#\s*(connectors|contracts|pipelines)/|^#\s*etrmflow\.ya?ml")
CHECK_PIPELINE = "pipelines/docs_check.yml"

DOCS_ENV: dict[str, str] = {}
"""Variables that a documented example reads without a default, set as an operator would set
them. Every other variable an example reads is unset during the check, so its default is used."""

ENV_VAR_CALL = re.compile(r"env_var\(\s*['\"](?P<name>[A-Za-z_][A-Za-z0-9_]*)['\"]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """One fenced block of a documentation page."""

    page: str
    line: int
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def path(self) -> str | None:
        match = MARKER.match(self.first_line)
        return match["path"] if match else None

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2  # the first line inside the fence
        body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]
        blocks.append(Block(page=page.name, line=line, lang=match["lang"], text=body))
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in sorted(DOCS.glob("*.md")) for block in read_blocks(page)]


def yaml_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.lang == "yaml"]


def documents() -> list[Block]:
    return [block for block in yaml_blocks() if block.path is not None]


def _id(block: Block) -> str:
    return f"{block.page}:{block.line}:{block.path or 'snippet'}"


# --- running the real checker ------------------------------------------------------------------

@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI reconfigures the etrmflow loggers; give the other tests theirs back."""
    loggers = [logging.getLogger("etrmflow"), logging.getLogger("aiohttp")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def make_project(root: Path, block: Block) -> Path:
    """The example project, with this page's marked blocks up to and including ``block`` written."""
    root.mkdir(parents=True)
    for name in EXAMPLE_PROJECT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    for earlier in documents():
        if earlier.page == block.page and earlier.line <= block.line:
            target = root / str(earlier.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(earlier.text, encoding="utf-8")
    return root


def pipeline_to_validate(root: Path, block: Block) -> tuple[str, str]:
    """The pipeline file that exercises ``block``, and that pipeline's name."""
    data = yaml.safe_load(block.text)
    folder = str(block.path).split("/", 1)[0]
    if folder == "pipelines":
        return str(block.path), data["name"]
    if folder == "etrmflow.yml":
        return "pipelines/acme_trades.yml", "acme_trades"
    if folder == "connectors":
        source = {"connector": data["name"], "stream": next(iter(data["streams"]))}
        contract = "trade"
    else:
        source, contract = {"connector": "acme_etrm", "stream": "trades"}, data["name"]
    pipeline = {"name": "docs_check", "source": source, "contract": contract}
    (root / CHECK_PIPELINE).write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    return CHECK_PIPELINE, "docs_check"


def set_environment(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Exactly DOCS_ENV: any other variable the project reads falls back to its default."""
    for path in root.rglob("*.y*ml"):
        for name in ENV_VAR_CALL.findall(path.read_text(encoding="utf-8")):
            monkeypatch.delenv(name, raising=False)
    for name, value in DOCS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("block", documents(), ids=_id)
def test_documented_yaml_document_is_valid(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    root = make_project(tmp_path / "project", block)
    pipeline, name = pipeline_to_validate(root, block)
    set_environment(monkeypatch, root)
    monkeypatch.chdir(root)

    code = run_cli(["validate", pipeline])

    captured = capsys.readouterr()
    assert code == ExitCode.OK, f"{block.where}: {block.path} does not validate:\n{captured.err}"
    assert captured.out == f"1 pipeline(s) valid: {name}\n"


@pytest.mark.parametrize("block", documents(), ids=_id)
def test_documented_file_is_named_after_its_name(block: Block) -> None:
    match = MARKER.match(block.first_line)
    assert match is not None
    if match["stem"] is None:  # etrmflow.yml
        return
    assert yaml.safe_load(block.text)["name"] == match["stem"], (
        f"{block.where}: {block.path} declares another name; etrmflow looks for <name>.yml first")


def test_a_broken_document_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    """The harness itself can fail: a documented pipeline with a typo is rejected, at its line."""
    block = Block(page="fake.md", line=1, lang="yaml", text=(
        "# pipelines/typo.yml\nname: typo\nsource: {connector: acme_etrm, stream: trades}\n"
        "contract: trade\nsinks:\n  - {type: sqlite, table: t, mode: upsrt}\n"))
    root = make_project(tmp_path / "project", block)
    (root / "pipelines" / "typo.yml").write_text(block.text, encoding="utf-8")
    pipeline, _ = pipeline_to_validate(root, block)
    set_environment(monkeypatch, root)
    monkeypatch.chdir(root)

    code = run_cli(["validate", pipeline])

    captured = capsys.readouterr()
    assert code == ExitCode.CONFIG_ERROR
    assert captured.err.splitlines()[0].startswith("pipelines/typo.yml:6:")
    assert "sinks[0].mode: " in captured.err and "'upsrt'" in captured.err


# --- what the documents may look like ----------------------------------------------------------

def test_every_user_guide_page_has_checked_documents() -> None:
    kinds = {(block.page, str(block.path).split("/", 1)[0]) for block in documents()}
    expected = {("connectors.md", "connectors"), ("contracts.md", "contracts"), ("pipelines.md", "pipelines"),
                ("getting-started.md", "connectors"), ("getting-started.md", "contracts"),
                ("getting-started.md", "pipelines"), ("index.md", "etrmflow.yml")}
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"


@pytest.mark.parametrize("block", yaml_blocks(), ids=_id)
def test_yaml_block_is_yaml(block: Block) -> None:
    if LOOKS_LIKE_MARKER.match(block.first_line):
        assert block.path is not None, f"{block.where}: malformed marker {block.first_line!r}"
    try:
        yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        pytest.fail(f"{block.where}: not YAML: {exc}")


# --- every key of every document is explained ----------------------------------------------------

PAGE_OF_DOCUMENT = {"connector": "connectors.md", "contract": "contracts.md", "pipeline": "pipelines.md",
                    "project": "index.md"}


def schema_keys(schema: dict, prefix: str = "") -> set[str]:
    """Dotted key paths of a document schema, ``<name>`` standing for a free map key."""
    keys = set()
    nested = [(key, value) for key, value in (schema.get("properties") or {}).items()]
    free = schema.get("additionalProperties")
    if isinstance(free, dict) and "properties" in free:
        nested.append(("<name>", free))
    items = schema.get("items")
    if isinstance(items, dict) and "properties" in items:
        keys |= schema_keys(items, prefix)
    for key, value in nested:
        path = f"{prefix}{key}"
        if key != "<name>":
            keys.add(path)
        if isinstance(value, dict):
            keys |= schema_keys(value, f"{path}.")
    return keys


@pytest.mark.parametrize("document", sorted(PAGE_OF_DOCUMENT))
def test_every_document_key_is_explained(document: str) -> None:
    from etrmflow.config.check import document_schema

    page = (DOCS / PAGE_OF_DOCUMENT[document]).read_text(encoding="utf-8")

    def explained(key: str) -> bool:  # as `initial`, `backoff.initial` or `retry.backoff.initial`...
        parts = key.split(".")
        return any(f"`{'.'.join(parts[index:])}`" in page for index in range(len(parts)))

    missing = sorted(key for key in schema_keys(document_schema(document)) if not explained(key))
    assert not missing, f"docs/{PAGE_OF_DOCUMENT[document]} does not explain: {missing}"


# --- the command-line page ---------------------------------------------------------------------

def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params if isinstance(param, click.Option)
            for opt in param.opts if opt.startswith("--")}


def test_cli_page_documents_every_command_and_option() -> None:
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [f"etrmflow {name}" for name in cli.commands if f"## `etrmflow {name}`" not in page]
    missing += [option for option in _options(cli) if f"`{option}" not in page]
    for name, command in cli.commands.items():
        section = page.split(f"## `etrmflow {name}`", 1)[-1].split("\n## ", 1)[0]
        shared = page.split("## Choosing pipelines", 1)[-1].split("\n## ", 1)[0]
        missing += [f"{name} {option}" for option in _options(command) - {"--help"}
                    if option not in section and option not in shared]
    assert not missing, f"docs/cli.md does not document: {missing}"


def test_cli_page_documents_every_exit_code() -> None:
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [code for code in ExitCode if f"| `{int(code)}` |" not in page]
    assert not missing, f"docs/cli.md's exit-code table lacks {missing}"


def test_docs_only_use_commands_that_exist() -> None:
    used = {match for block in all_blocks() if block.lang in ("bash", "text", "")
            for match in re.findall(r"(?:^|\$ |&& |\n)etrmflow (?:--[\w-]+(?: \w+)? )*([a-z][\w-]*)", block.text)}
    unknown = sorted(used - set(cli.commands))
    assert not unknown, f"docs use commands that do not exist: {unknown}"
