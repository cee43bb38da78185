"""The MLX backend: local models through mlx-lm, batched on one engine thread per model.

Importing this package (or `backends.mlx.backend`/`backends.mlx.plugin`) never
imports mlx: that happens when a model loads, after the fast-BLAS preload.
"""
