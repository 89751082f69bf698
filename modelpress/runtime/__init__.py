"""Runtime layer: what the models run on (CPU target detection; sessions and run-and-compare to follow)."""
