"""Deployment: ONNX export of the whole model into a bundle, quantisation, pruning, distillation."""
