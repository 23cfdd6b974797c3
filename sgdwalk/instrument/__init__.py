"""Layer 1, the instrument: pure measurement functions and the one stateful tracker.

Segment losses, floors, heights, barriers, cosines, distances, sharpness and the tracker a
training loop calls around ``optimizer.step()``. Imports nothing from the layers above
(training, runs, claims, cli); the import rule in ``pyproject.toml`` enforces it.
"""
