"""Exporters: TorchScript / ONNX artifacts verified against the PyTorch model."""
