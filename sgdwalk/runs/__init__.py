"""Layer 3, runs: one training run measured end to end (the runner), the run directory on
disk (records, summaries, figures) and sweeps of many runs. Imports only the layers below."""
