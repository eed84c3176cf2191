"""Short learning curves: per-epoch test accuracy of several specs trained alike.

Every spec is trained with the same dataset, epochs, learning rate and seed (each with its
own recipe otherwise: optimizer, batch size, augmentation), one after the other in this
process, and a table of test accuracy per epoch is printed, so a regression in how the paper
models learn is seen at once. A spec may carry top-level overrides after a colon, e.g.
``mnist_regular_gauss:kernel_basis=raw`` (values are read as YAML).

    python scripts/learning_curves.py mnist_regular_fd mnist_regular_gauss \\
        --dataset sample --epochs 2 --lr 2e-3
    python scripts/learning_curves.py quickstart quickstart_pdoeconv --dataset sample
    python scripts/learning_curves.py mnist_regular_gauss mnist_regular_gauss:kernel_basis=raw \\
        --dataset rotated-idx --epochs 2 --lr 2e-3 --json ab.json

Run it alone on the machine: two trainings at once on two cores slow each other 5-15x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from epdo.zoo import load_spec
from epdo.zoo.spec import SpecError
from epdo.zoo.training import train


def spec_with_overrides(text: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value,...]`` -> (label, resolved spec dict with the top-level overrides)."""
    name, _, rest = text.partition(":")
    data = load_spec(name).resolved()
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in data:
            raise SpecError(f"{text}: an override is key=value with a top-level spec key")
        data[key] = yaml.safe_load(value)
    return text, load_spec(data).resolved()


def curve(label: str, spec: dict[str, Any], args: argparse.Namespace, out: Path) -> dict:
    result = train(
        spec, epochs=args.epochs, lr=args.lr, dataset=args.dataset, data_dir=args.data_dir,
        seed=args.seed, device=args.device, out=out,
    )
    history = result.history
    return {
        "spec": label,
        "parameters": result.summary.get("parameters"),
        "test_acc": [h["test_acc"] for h in history],
        "train_loss": [h["train_loss"] for h in history],
        "seconds": sum(h["seconds"] for h in history),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="spec names or paths, each [:key=value,...]")
    parser.add_argument("--dataset", default="sample")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: each spec's own")
    parser.add_argument("--lr", type=float, default=None, help="default: each spec's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the curves here")
    args = parser.parse_args(argv)
    try:
        specs = [spec_with_overrides(s) for s in args.specs]
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="epdo-curves-") as tmp:
        for i, (label, spec) in enumerate(specs):
            rows.append(curve(label, spec, args, Path(tmp) / str(i)))
            print(_table(rows, args), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "curves": rows}, indent=1))
    return 0


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    epochs = max(len(r["test_acc"]) for r in rows)
    lr = "each spec's" if args.lr is None else f"{args.lr:g}"
    n = "each spec's" if args.epochs is None else str(args.epochs)
    head = f"test accuracy per epoch ({args.dataset}, {n} epochs, lr {lr}, seed {args.seed})"
    width = max(len(r["spec"]) for r in rows)
    lines = [head, f"{'spec':<{width}}  {'params':>9}  "
             + "  ".join(f"ep{e + 1:>3}" for e in range(epochs))
             + "   train loss (last)   seconds"]
    for r in rows:
        accs = "  ".join(f"{100 * a:5.1f}" for a in r["test_acc"])
        params = f"{r['parameters']:,}" if r["parameters"] is not None else "?"
        lines.append(f"{r['spec']:<{width}}  {params:>9}  {accs}   {r['train_loss'][-1]:10.4f}"
                     f"          {r['seconds']:7.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
