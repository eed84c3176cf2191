"""`epdo data`: where datasets are read from (`info`), downloading MNIST-rot and CIFAR (`fetch`).

Thin commands over :mod:`epdo.zoo.data`; a :class:`~epdo.zoo.data.DataError` becomes one
line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from epdo.cli.app import console, fail, print_json
from epdo.cli.text import literal

data_app = typer.Typer(
    help="Datasets: where each is read from, and downloading MNIST-rot and CIFAR.",
    no_args_is_help=True,
)


def fetch_command(
    name: Annotated[str, typer.Argument(
        help="The dataset to download: mnist-rot, cifar10 or cifar100.")],
    url: Annotated[str | None, typer.Option(
        "--url", help="Download from here instead (default: $EPDO_MNIST_ROT_URL, "
        "$EPDO_CIFAR10_URL or $EPDO_CIFAR100_URL, else the official address; only an archive "
        "from the official CIFAR address is checked against its published md5).")] = None,
    dest: Annotated[Path | None, typer.Option(
        "--dest", "--data-dir", help="Folder to store the data in (default: the user "
        "cache, where the loaders look).")] = None,
) -> None:
    """Download a dataset's archive, check it, and store it where the loaders find it.

    mnist-rot's zip is stored as it is; a CIFAR archive is unpacked into the folder the
    loader reads (cifar-10-batches-py / cifar-100-python), replacing one already there only
    once every check passed.
    """
    from epdo.zoo.data import fetch_dataset

    path = fetch_dataset(name, url=url, dest=dest, progress=True)
    console.print(literal(f"{name}: checked and saved to {path}"), highlight=False)


_STATUS = {"found": ("yes", "green"), "missing": ("no", "yellow"), "broken": ("broken", "red")}


def _size(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _info_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="epdo datasets")
    table.add_column("dataset", no_wrap=True)
    table.add_column("found", no_wrap=True)
    table.add_column("train", justify="right", no_wrap=True)
    table.add_column("test", justify="right", no_wrap=True)
    table.add_column("classes", justify="right", no_wrap=True)
    table.add_column("read from", overflow="fold")
    for r in records:
        found = Text(*_STATUS[r["status"]])
        if r["found"]:
            where = "; ".join(sorted({s for s in r["sources"].values() if s}))
        else:
            where = "searched: " + ", ".join(r["searched"]) if r["searched"] else "-"
        table.add_row(literal(r["name"]), found, _size(r["sizes"]["train"]),
                      _size(r["sizes"]["test"]), _size(r["classes"]), literal(where))
    return table


def _folder_report(info: dict[str, Any]) -> None:
    """The folder report as a table of classes and a few lines (user text never markup)."""
    console.print(literal(f"{info['root']}: {info['layout']}"), highlight=False,
                  soft_wrap=True)
    table = Table()
    table.add_column("class", overflow="fold")
    table.add_column("train", justify="right", no_wrap=True)
    table.add_column("test", justify="right", no_wrap=True)
    for row in info["classes"]:
        table.add_row(literal(row["name"]), f"{row['train']:,}", f"{row['test']:,}")
    table.add_row(Text("total", "bold"), f"{info['images']['train']:,}",
                  f"{info['images']['test']:,}")
    console.print(table)
    lines = []
    if info["split"]:
        lines.append(f"no train/ and test/ (or val/) folders: a stratified split with seed "
                     f"{info['split']['seed']} holds out "
                     f"{100 * info['split']['test_fraction']:g}% of each class for testing")
    ch = info["channels"]
    lines.append(f"channels: {ch['grayscale']:,} grayscale, {ch['colour']:,} colour; bits per "
                 "channel: " + ", ".join(f"{n:,} files of {b}" for b, n in info["bits"].items()))
    if info["smallest"]:
        (w0, h0), (w1, h1) = info["smallest"], info["largest"]
        lines.append(f"sizes: from {w0}x{h0} to {w1}x{h1} pixels (width x height)")
    lines += [f"note: {n}" for n in info["notes"]]
    bad = info["bad"]
    lines.append(f"{len(bad)} file{'s' if len(bad) != 1 else ''} cannot be read"
                 + (":" if bad else ""))
    lines += [f"  {b['file']}: {b['error']}" for b in bad]
    for line in lines:
        console.print(literal(line), highlight=False, soft_wrap=True)


def _folder_info(path: str, as_json: bool) -> None:
    from epdo.zoo.data.folder_info import folder_info
    from epdo.zoo.training.progress import RichProgress

    bars = RichProgress(console, bars=console.is_terminal and not as_json)
    try:
        info = folder_info(path, progress=bars.data_progress)
    finally:
        bars.close()
    if as_json:
        print_json(info)
    else:
        _folder_report(info)


def info_command(
    name: Annotated[str | None, typer.Argument(
        help="One dataset (default: all of them), or folder:PATH for a folder of your images "
        "(classes, counts, sizes, channels, files that cannot be read).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Look only in this folder (as `epdo train --data-dir` would).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """For each dataset: where it would be read from, whether it is there, split sizes."""
    from epdo.zoo.data import dataset_info, datasets_info

    if name is not None and name.startswith("folder:"):
        if not name[len("folder:"):]:
            fail("folder:PATH needs the folder after 'folder:' (e.g. folder:~/data/cells)")
        _folder_info(name[len("folder:"):], as_json)
        return

    records = [dataset_info(name, data_dir)] if name is not None else datasets_info(data_dir)
    if as_json:
        print_json(records if name is None else records[0])
        return
    console.print(_info_table(records))
    if name is None:
        if any(not r["found"] for r in records):
            console.print(literal("`epdo data info NAME` says what is missing and how to get it."),
                          highlight=False)
        return
    for split, message in records[0]["errors"].items():
        console.print(Text.assemble(literal(f"{split}:", "bold"), " ", literal(message)),
                      highlight=False,
                      soft_wrap=True)
