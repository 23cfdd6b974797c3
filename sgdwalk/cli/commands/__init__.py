"""Subcommands of the `sgdwalk` CLI, one module each."""
