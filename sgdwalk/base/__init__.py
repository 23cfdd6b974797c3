"""Layer 0, the shared pieces every layer above may use: the root exception, atomic file
writes, strict JSON with non-finite numbers, and plain-text tables.

Nothing here imports torch, numpy or any other sgdwalk layer, so the pytest plugin and
``sgdwalk --help`` can use it without paying for them.
"""
