"""What a newcomer sees in an 80-column terminal: ``epdo list``, ``epdo info SPEC`` (every
shipped spec) and every ``--help`` fit, keep every name, field type and number whole, and
help texts flow as paragraphs; in a pipe the tables are plain text (issue 25).

To stay fast, the module builds each shipped model once (``list`` and ``info`` share them)
and ``info`` counts no FLOPs: every layer is given :data:`FLOPS` ("100.00M", as wide as the
widest counted figure); counting runs each model twice, a minute for the CIFAR specs on two
cores, and ``test_cli`` checks the counted numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import typer.main
from cli_checks import cli
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from epdo.cli import app as app_module
from epdo.cli.main import app
from epdo.cli.spec_cmd import _headline, _human, compact_type
from epdo.cli.text import flowing
from epdo.zoo.catalog import list_specs, zoo_listing

WIDTH = 80
TERMINAL = {"COLUMNS": str(WIDTH), "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}
PIPE = {"COLUMNS": str(WIDTH), "TTY_COMPATIBLE": "0"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BORDERS = "│┃║"
BOX = set("│┃║─━═┌┐└┘╭╮╰╯┏┓┗┛├┤┬┴┼")


FLOPS = 100_000_000


@pytest.fixture(scope="module", autouse=True)
def _models_built_once() -> Iterator[None]:
    """``build_model`` remembers each shipped model; ``summarize`` skips the FLOP count."""
    from epdo import zoo
    from epdo.zoo import catalog, summary

    built: dict[str, object] = {}
    real = zoo.build_model

    def build(spec: object) -> object:
        key = spec if isinstance(spec, str) else spec.name
        if key not in built:
            built[key] = real(spec)
        return built[key]

    def summarize(model: object) -> summary.ModelSummary:
        rows = [summary._row(plan, block, FLOPS)
                for plan, block in zip(model.plan.layers, model.blocks, strict=True)]
        spec = model.spec
        return summary.ModelSummary(
            name=spec.name, group=model.plan.input.group.name,
            discretization=spec.discretization, description=spec.description,
            input_shape=tuple(model.input_shape), rows=rows,
            params=sum(p.numel() for p in model.parameters()),
            flops=sum(r.flops for r in rows))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo, "build_model", build)
        patch.setattr(catalog, "build_model", build)
        patch.setattr(summary, "summarize", summarize)
        yield


@pytest.fixture(autouse=True)
def _width_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's console takes its width from COLUMNS when it is made (at import); here it
    reads the width each command runs with."""
    monkeypatch.setattr(app_module.console, "_width", None)


def shown(*args: str, env: dict[str, str] = TERMINAL) -> list[str]:
    """The stdout lines of ``epdo ARGS`` (exit 0), escape codes removed."""
    result = cli(*args, env=env)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return ANSI.sub("", result.stdout).splitlines()


def squeezed(line: str) -> str:
    return " ".join(line.split())


def assert_fits(lines: list[str]) -> None:
    wide = [line for line in lines if cell_len(line.rstrip()) > WIDTH]
    assert not wide, wide


@pytest.fixture(scope="module")
def listing() -> list[dict]:
    return zoo_listing()


def test_list_fits_80_columns_one_line_per_spec(listing: list[dict]) -> None:
    lines = shown("list")
    assert_fits(lines)
    for row in listing:
        mine = [line for line in lines if line.split()[:1] == [row["name"]]]
        assert len(mine) == 1, (row["name"], lines)
        cells = mine[0].split()
        assert cells[1] == row["group"] and f"{row['params']:,}" in cells, mine[0]
    assert any("…" in line for line in lines)  # descriptions are cut, not wrapped


def test_list_in_a_pipe_is_plain_and_whole(listing: list[dict]) -> None:
    lines = shown("list", env=PIPE)
    assert not BOX & set("".join(lines)) and "…" not in "".join(lines)
    assert lines[1].split() == ["name", "group", "stencils", "params", "description"]
    for row in listing:
        line = next(line for line in lines if line.startswith(row["name"] + " "))
        assert squeezed(line).endswith(squeezed(_headline(row["description"])))


def test_list_wide_wraps_the_whole_description(listing: list[dict]) -> None:
    lines = shown("list", "--wide")
    start = next(i for i, line in enumerate(lines) if line.startswith("quickstart "))
    end = next(i for i, line in enumerate(lines) if line.startswith("quickstart_cnn "))
    text = squeezed(" ".join(line[64:] for line in lines[start:end]))
    quick = next(r for r in listing if r["name"] == "quickstart")
    assert "…" not in "".join(lines) and text == squeezed(quick["description"])


def _expected_rows(name: str) -> tuple[list[list[str]], bool]:
    import json

    info = json.loads(cli("info", name, "--json").stdout)
    rows = [[r["path"], r["op"], compact_type(r["type_in"], info["group"]),
             compact_type(r["type_out"], info["group"]), f"{r['channels_in']}→{r['channels_out']}",
             r["size_out"], f"{r['params']:,}", _human(r["flops"])] for r in info["rows"]]
    return rows, info


@pytest.mark.parametrize("name", list_specs())
def test_info_fits_80_columns_and_keeps_every_type_and_number(name: str) -> None:
    rows, info = _expected_rows(name)
    lines = shown("info", name)
    assert_fits(lines)
    table = lines[: lines.index(next(line for line in lines if line.startswith("total"))) + 1]
    assert "…" not in "".join(table)
    with_inputs = "fields in" in table[1]
    flat = [squeezed(line) for line in table]
    for row in rows:
        cells = row if with_inputs else row[:2] + row[3:]
        assert squeezed(" ".join(cells)) in flat, (cells, table)
    assert squeezed(f"total {info['params']:,} {_human(info['flops'])}") in flat
    assert squeezed(info["description"]) in squeezed(" ".join(lines[len(table):]))


def test_info_wide_and_pipe_show_the_inputs() -> None:
    rows, _ = _expected_rows("mnist_d16c16_gauss")
    assert "fields in" not in shown("info", "mnist_d16c16_gauss")[1]
    piped = shown("info", "mnist_d16c16_gauss", env=PIPE)
    assert not BOX & set("".join(piped))
    for lines in (shown("info", "mnist_d16c16_gauss", "--wide"), piped):
        assert lines[1].split()[:4] == ["layer", "op", "fields", "in"]
        assert squeezed(" ".join(rows[5])) in [squeezed(line) for line in lines]


def test_compact_field_types() -> None:
    assert compact_type("4xregular (C8)", "C8") == "4×regular"
    assert compact_type("64xregular (C16)", "D16") == "64×regular (C16)"
    assert compact_type("12x[regular, quotient4] (C16)", "C16") == "12×regular+quotient4"
    assert compact_type("11 logits per pixel", "C8") == "11 logits per pixel"


def _commands() -> Iterator[tuple[list[str], object]]:
    """Every command and group of the tree, as the words that name it."""
    def walk(command: object, words: list[str]) -> Iterator[tuple[list[str], object]]:
        yield words, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*words, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = [words for words, _ in _commands()]


def stray_breaks(lines: list[str]) -> list[tuple[str, str]]:
    """Line breaks that land inside a sentence and that wrapping did not make: a line that
    ends in a letter or digit, followed (in the same column of the same paragraph) by one
    that starts with a lowercase word which would have fitted on the first line."""
    found = []
    for a, b in zip(lines, lines[1:], strict=False):
        start = len(b) - len(b.lstrip(" " + BORDERS))
        if start >= len(b) or start >= len(a) or a[start - 1:start] not in (" ", *BORDERS):
            continue
        word = b[start:].split()[0]
        right = a.rstrip().rfind("│") if a.rstrip().endswith("│") else WIDTH
        text = a[:right].rstrip()
        if not word[0].islower() or not text or not text[-1].isalnum() or len(text) <= start:
            continue
        if len(text) + 1 + len(word) <= right - 1:
            found.append((a, b))
    return found


def test_stray_breaks_are_found() -> None:
    console = Console(width=WIDTH, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(Text(" Layer table and the input sizes at which\n it is exactly equivariant."))
    console.file.close()
    assert len(stray_breaks(console.export_text().splitlines())) == 1


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "epdo")
def test_help_fits_and_flows_at_80_columns(words: list[str]) -> None:
    lines = shown(*words, "--help")
    assert_fits(lines)
    assert not stray_breaks(lines), stray_breaks(lines)


def test_every_help_text_is_flowed_paragraphs() -> None:
    for words, command in _commands():
        texts = [command.help, command.epilog] + [getattr(p, "help", None)
                                                  for p in command.params]
        for text in filter(None, texts):
            assert text == flowing(text), words
            for paragraph in text.split("\n\n"):
                assert "\n" not in paragraph, (words, paragraph)
    top = " ".join(shown("--help"))
    assert "Start with 'epdo list'" in squeezed(top)


def test_flowing_keeps_paragraphs_and_items() -> None:
    text = "One line\n    and its rest.\n\nItems:\n- a\n  b\n- c\n\n\b\nkept\nas is"
    assert flowing(text) == "One line and its rest.\n\nItems:\n- a b\n- c\n\n\b\nkept\nas is"
    assert flowing("see [bold]x[/bold]") == "see \\[bold]x\\[/bold]"
