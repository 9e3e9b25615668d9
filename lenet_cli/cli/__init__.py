"""The console commands: one thin module per script (argument and Hydra glue only)."""
