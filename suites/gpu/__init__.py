"""The GPU tier: claims C1-C11 on VGG-11, ResNet-56 (CIFAR-10) and the MLP (MNIST).

``profiles`` holds the sizes (tiny / smoke / paper) as data, ``claims`` the settings and the
checks, ``test_claims`` the one parametrised test. Run with ``pytest suites/gpu --runslow``.
"""
