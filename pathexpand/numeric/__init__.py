"""Numeric layer: weights, forward pass, factored algebra, metrics, attribution (torch)."""
