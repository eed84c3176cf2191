"""`epdo serve`: exported artifacts behind an Open Inference Protocol endpoint (a thin layer
over :mod:`epdo.exporters.server`; needs the ``serve`` extra: FastAPI and uvicorn).

Exit codes: 0 after SIGTERM or Ctrl-C (the requests in flight are answered first); 2 an
input problem (an artifact that does not verify, a bad name, the extra missing) on one line.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Annotated

import typer

from epdo.cli.app import fail, print_note
from epdo.cli.text import shown

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _named(items: list[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every ``PATH`` (its file's stem, without the format's suffix) or
    ``NAME=PATH``; one line for a bad or repeated name."""
    from epdo.exporters.formats import find_format

    out: list[tuple[str, Path]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            fmt = find_format(path)
            base = Path(path).name
            name = base[: -len(next(s for s in fmt.suffixes if base.lower().endswith(s)))] \
                if fmt else Path(path).stem
        if not _NAME.fullmatch(name):
            fail(f"model name {shown(name)!r}: use letters, digits, '_', '.' or '-' (at most "
                 "64), e.g. NAME=PATH")
        if any(name == n for n, _ in out):
            fail(f"model name {name!r} is given twice; name them with NAME=PATH")
        out.append((name, Path(path)))
    return out


def serve_command(
    artifacts: Annotated[list[str], typer.Argument(
        metavar="ARTIFACT", help="Artifacts to serve: PATH (the model is named by the "
        "file's stem) or NAME=PATH.")],
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this "
                             "machine only)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Most images run together "
                                  "(dynamic batching)."),
    max_delay_ms: float = typer.Option(0.0, "--max-delay-ms", min=0.0, max=10_000.0,
                                       help="Most milliseconds the first request of a batch "
                                       "waits for others (0: requests that queue while a "
                                       "batch runs join the next one)."),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="Most requests waiting per "
                                  "model; more get 503 at once."),
    threads: int = typer.Option(None, "--threads", min=1, help="Intra-op threads (torch and "
                                "onnxruntime); default: their own."),
    provider: str = typer.Option("auto", "--provider", help="auto, cpu or cuda."),
    trust: bool = typer.Option(False, "--trust", help="Serve artifacts without a digest, "
                               "and AOTInductor packages (native code)."),
) -> None:
    """Serve artifacts over HTTP with the Open Inference Protocol (KServe v2, as Triton
    speaks it): health, metadata and infer routes, dynamic batching, a standard client."""
    try:
        import uvicorn

        from epdo.exporters.server import ServedModel, create_app
    except ImportError as exc:
        fail(f"epdo serve needs the serve extra ({exc.name} is missing): "
             "pip install 'epdo[serve]'")
    import torch

    from epdo.exporters.batcher import Batcher
    from epdo.exporters.runtime import load_classifier

    if threads is not None:
        torch.set_num_threads(threads)
    models = []
    for name, path in _named(artifacts):
        clf = load_classifier(path, provider, trust=trust, threads=threads)
        batcher = Batcher(lambda x, c=clf: c.predict(x, batch_size=len(x)), max_batch,
                          max_delay_ms / 1000.0, max_queue)
        models.append(ServedModel(name, clf, batcher))
        print_note(f"serving {name}: {path} ({clf.format.name}, {clf.task}, "
                   f"{len(clf.classes)} classes) at http://{host}:{port}/v2/models/{name}/infer")
    config = uvicorn.Config(create_app(models), host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=30, access_log=False)
    # uvicorn answers SIGINT/SIGTERM itself (stop accepting, finish the requests in flight)
    # and raises the signal again once stopped: ignored then, the server exits 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        uvicorn.Server(config).run()
    finally:
        for model in models:
            model.batcher.close()
    print_note("stopped")
