"""Other formats of the emitted model (ONNX), and their agreement with LiteRT."""
