"""Optimisers of the generated image: our L-BFGS (batched, scale-free, no host sync)."""
