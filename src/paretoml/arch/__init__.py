"""Efficient architectures. Import the technique module you need, e.g. `paretoml.arch.moe`."""
