"""Serve an exported epdo ONNX model with onnxruntime and numpy alone (no epdo, no Pillow).

    python serve_onnx.py model.onnx digit0.npy digit1.npy --top-k 3 [--json] [--provider cpu]

Each input is a ``.npy`` array of one image: shape (H, W) for one-channel models, (C, H, W)
or (H, W, C); uint8 pixels, or floats in [0, 1]. The model's metadata (``metadata_props``,
JSON-encoded values) gives the input shape ``epdo.input_shape`` = [C, H, W], the class names
``epdo.classes`` and the pixel scale; the normalization is inside the graph, so the model
takes raw pixels in [0, 1]. The output is what ``epdo predict`` prints: per input, the
top-k classes with softmax probabilities (with --json the same JSON list).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def load(path: str, provider: str = "cpu") -> tuple[ort.InferenceSession, dict]:
    """The onnxruntime session and the decoded metadata of an exported model."""
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(path, providers=providers)
    meta = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return session, meta


def to_input(array: np.ndarray, shape: list[int], scale: float) -> np.ndarray:
    """One image as (C, H, W) float32 in [0, 1]; raises ValueError when it does not fit."""
    c, h, w = shape
    if array.dtype == np.uint8:
        x = array.astype(np.float32) * np.float32(scale)
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
        if x.size and not (0.0 <= x.min() and x.max() <= 1.0):
            raise ValueError("float pixels must lie in [0, 1]")
    else:
        raise ValueError(f"expected uint8 or float pixels, got {array.dtype}")
    if x.shape == (c, h, w):
        return x
    if c == 1 and x.shape == (h, w):
        return x[None]
    if x.shape == (h, w, c):
        return x.transpose(2, 0, 1)
    raise ValueError(f"expected shape ({c}, {h}, {w}), got {x.shape}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    """Print the top-k classes of each input; 1 when some input failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    session, meta = load(args.model, args.provider)
    shape = meta["epdo.input_shape"]
    scale = meta.get("epdo.preprocess", {}).get("scale", 1.0 / 255.0)
    names, arrays, failed = [], [], 0
    for path in args.inputs:
        try:
            arrays.append(to_input(np.load(path, allow_pickle=False), shape, scale))
            names.append(path)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
    results = []
    if arrays:
        batch = np.stack(arrays).astype(np.float32)
        logits = np.concatenate([
            session.run(["logits"], {"images": batch[i:i + args.batch_size]})[0]
            for i in range(0, len(batch), args.batch_size)])
        probs = softmax(logits)
        classes = meta.get("epdo.classes") or [str(i) for i in range(logits.shape[1])]
        k = max(1, min(args.top_k, logits.shape[1]))
        for name, row, p in zip(names, logits, probs, strict=True):
            top = np.argsort(-p, kind="stable")[:k]
            results.append({
                "input": name,
                "top_k": [{"class": classes[i], "index": int(i), "probability": float(p[i])}
                          for i in top],
                "logits": [float(v) for v in row],
            })
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            best = ", ".join(f"{t['class']} {t['probability']:.4f}" for t in r["top_k"])
            print(f"{r['input']}: {best}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
