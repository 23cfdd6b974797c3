"""Layer 4, claims: the registry of the paper's claims, the statistics that decide them, the
engine that runs their settings, the outcome ledger and the pytest plugin."""
