"""lenet-cli's grid sweeper for Hydra (a Hydra plugin: Hydra finds sweepers only in the
hydra_plugins namespace). See hydra_plugins/lenet_cli_grid/sweeper.py."""
