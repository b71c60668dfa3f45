"""The `gantry` command line."""
