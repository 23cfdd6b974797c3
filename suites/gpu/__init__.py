"""The GPU tier: claims C1-C11 on VGG-11, ResNet-56 (CIFAR-10) and the MLP (MNIST).

The claims table (``suites/claims_table.py``) at the ``tiny``, ``smoke`` and ``paper`` profiles
(``suites/profiles.py``); ``claims`` holds the tier's data choice and sweep grid,
``test_claims`` the one parametrised test. Run with ``pytest suites/gpu --runslow``.
"""
