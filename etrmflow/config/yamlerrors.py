"""YAML syntax errors in words an operations engineer acts on, at the line to fix.

PyYAML reports the place it gave up: for an unclosed quote or bracket that is the end of the
file, far from the mistake. Here the issue points where the unclosed thing opened, says what is
wrong in plain words, adds how to fix it, and shows a numbered excerpt with a caret (dbt style).
"""

from __future__ import annotations

from typing import Any

import yaml

from etrmflow.errors import ConfigIssue, Location

_UNCLOSED = (
    ("quoted scalar", "this quoted string is never closed", "add the closing quote"),
    ("flow sequence", "this '[' is never closed", "add the closing ']'"),
    ("flow mapping", "this '{' is never closed", "add the closing '}'"),
    ("flow node", "the text ends where a value is expected", "finish the value and close every '[' and '{'"),
)

_HINTS = (
    ("found character '\\t'", "indent with spaces: YAML does not allow tabs"),
    ("mapping values are not allowed here",
     "indent this key under its parent, or quote a value that contains ': '"),
    ("found undefined alias", "define the anchor (&name) above, or quote a value that starts with '*'"),
    ("cannot start any token", "quote values that start with @, ` or %"),
    ("found unknown escape character",
     "in double quotes a backslash starts an escape: write \\\\ or use single quotes"),
    ("expected alphabetic or numeric character", "quote values that start with '*' or '&'"),
)


def syntax_issue(exc: yaml.MarkedYAMLError, text: str, display: str) -> ConfigIssue:
    """One located issue for a YAML syntax error, with a hint and an excerpt."""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    message, hint = problem, _hint(problem)
    if exc.context_mark is not None and ("end of stream" in problem or "<stream end>" in problem):
        mark, message, hint = exc.context_mark, *_unclosed(context, problem)
    elif "flow" in context and problem.startswith("expected ','") and exc.context_mark and exc.problem_mark:
        opened = "[" if "sequence" in context else "{"
        closing = "]" if opened == "[" else "}"
        at = exc.problem_mark
        mark, message = exc.context_mark, (f"the '{opened}' that starts here is not closed before line "
                                           f"{at.line + 1}, column {at.column + 1}")
        hint = f"add the closing '{closing}', or quote a value that contains ':' or ','"
    elif "could not find expected ':'" in problem and exc.context_mark is not None:
        mark, message = exc.context_mark, "this line has no ':' after its key"
        hint = "write 'key: value', or quote a value that continues on the next line"
    elif "found another document" in problem:
        message, hint = "a second YAML document ('---') in one file", "remove the '---' line and what follows it"
    elif problem.startswith("expected <block end>"):
        message, hint = _block_end(problem)
    line, column = _clamp(text, mark)
    return ConfigIssue(location=Location(file=display, line=line, column=column), key_path="",
                       message=f"YAML syntax error: {message}", hint=hint, excerpt=excerpt(text, line, column))


def _hint(problem: str) -> str:
    return next((hint for needle, hint in _HINTS if needle in problem), "")


def _unclosed(context: str, problem: str) -> tuple[str, str]:
    for needle, message, hint in _UNCLOSED:
        if needle in context:
            return message, hint
    return f"{problem} ({context})" if context else problem, ""


def _block_end(problem: str) -> tuple[str, str]:
    found = problem.split("but found", 1)[-1].strip()
    if found in ("'<block mapping start>'", "'?'", "'-'", "'<block sequence start>'"):
        return ("this line is indented differently from the lines above it",
                "keys of one mapping, and items of one list, must start in the same column")
    return f"unexpected {found}", ""


def _clamp(text: str, mark: Any) -> tuple[int, int]:
    """1-based line and column of ``mark``; the end of the last line for the end of the file."""
    if mark is None:
        return 1, 1
    lines = text.splitlines() or [""]
    line, column = mark.line + 1, mark.column + 1
    if line > len(lines):
        return len(lines), len(lines[-1]) + 1
    return line, column


def excerpt(text: str, line: int, column: int, around: int = 2) -> str:
    """Numbered source lines around ``line`` with a caret under ``column``."""
    lines = text.splitlines()
    if not line or line > len(lines):
        return ""
    first, last = max(1, line - around), min(len(lines), line + around)
    width = len(str(last))
    out = []
    for number in range(first, last + 1):
        out.append(f"  {number:>{width}} | {lines[number - 1]}".rstrip())
        if number == line:  # tabs kept under tabs, so the caret lines up in any terminal
            padding = "".join(c if c == "\t" else " " for c in lines[number - 1][:max(column - 1, 0)])
            out.append(f"  {' ' * width} | {padding}^")
    return "\n".join(out)
