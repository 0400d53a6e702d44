"""Exporting a run's model to ONNX or TorchScript, checked against the run on real images."""
