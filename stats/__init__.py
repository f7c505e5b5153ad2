"""Image statistics stores: moments, shrinkage, nearest-neighbour index (import name `ovi_stats`)."""
