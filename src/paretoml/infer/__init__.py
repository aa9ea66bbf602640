"""Inference efficiency: quantization, speculative decoding, distillation, early exit, cascades.

Import the technique modules explicitly (``from paretoml.infer.quantize import quantize_``);
this package imports nothing heavy (no Triton, no CUDA initialisation).
"""
