"""sgdwalk in the user's own stack: metrics sinks (CSV, TensorBoard, MLflow) and a Lightning callback.

Above ``instrument`` (they turn its records into other libraries' calls), below ``runs`` and
``cli`` (``sgdwalk walk --log-to`` opens them). Every optional library is imported on first
use, so ``import sgdwalk`` and every module here import without it; a missing one is a
``MissingExtraError`` naming the extra to install.
"""
