"""Data sets. Every source yields ``(image, label)`` with ``image`` a uint8 tensor (3, S, S) in
0..255 and ``label`` an int, and exposes ``classes`` (names in label order). The model-facing
float conversion, mean subtraction, crop and flip happen per batch in
:mod:`zfnet_cli.data.transforms`, on the training device.

In-memory sets (the embedded data) also expose ``images`` (N, 3, S, S) uint8 and ``labels`` (N,)
int64 tensors, which the training loop batches directly without a DataLoader.
"""
