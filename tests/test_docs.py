"""The README and docs/: every ``epdo`` command shown parses (its ``--help`` exists) and every
linked file exists; the README stays short (issue 25)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
from cli_checks import cli

from epdo.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def code_lines(page: Path) -> list[str]:
    """The lines of the page's shell code blocks (```bash, ```sh, ```shell, ```console)."""
    lines, inside = [], None
    for line in page.read_text().splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            inside = None if inside is not None else fence.group(1)
        elif inside in ("bash", "sh", "console", "shell"):
            lines.append(line)
    return lines


def command_words(line: str) -> list[str] | None:
    """The command (and sub-command) an ``epdo`` call in ``line`` names, or ``None``."""
    try:
        words = shlex.split(line.lstrip("$ "), comments=True)
    except ValueError:
        words = line.split()
    if "epdo" not in words:
        return None
    group = typer.main.get_command(app)
    named: list[str] = []
    for word in words[words.index("epdo") + 1:]:
        commands = getattr(group, "commands", None)
        if not commands or word.startswith("-"):
            break
        named.append(word)  # a word that names no command fails its --help below
        if word not in commands:
            break
        group = commands[word]
    return named


def shown_commands() -> list[tuple[str, list[str]]]:
    found = {}
    for page in PAGES:
        for line in code_lines(page):
            words = command_words(line)
            if words:
                found.setdefault(" ".join(words), (page.name, words))
    return sorted(found.values(), key=lambda item: item[1])


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
    setup = code_lines(ROOT / "README.md")[:2]
    assert "pip install -e . && epdo train" in setup[0]
    assert "pip install -e '.[dev]' && python -m pytest" in setup[1]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_linked_file_exists(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"


def test_the_readme_links_every_page_of_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


def test_every_figure_is_shown_beside_a_command() -> None:
    for page in PAGES:
        if any(LINK.findall(line) and "figures/" in line for line in page.read_text().splitlines()):
            assert any(command_words(line) for line in code_lines(page)), page.name


@pytest.mark.parametrize("where_words", shown_commands(),
                         ids=lambda item: " ".join(item[1]) or "epdo")
def test_every_command_shown_parses(where_words: tuple[str, list[str]]) -> None:
    where, words = where_words
    result = cli(*words, "--help")
    assert result.exit_code == 0, (where, words, result.stderr)
