"""This folder is the package ``uniaudio_cli.assets.prompts`` (see ``package-dir`` in pyproject.toml):
the prompt templates and demonstration audio are found with importlib.resources, in a wheel as in a
checkout. The ``make_*.py`` scripts here are run directly, not imported."""
