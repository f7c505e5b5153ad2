"""`ovi bench`: generate a benchmark's images in its official layout, score them, tabulate runs."""
