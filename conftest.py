"""Top-level conftest: the plugin tests drive real pytest runs through ``pytester``."""

pytest_plugins = ["pytester"]
