"""This folder is the package ``uniaudio_cli.assets.checkpoints`` (see ``package-dir`` in pyproject.toml):
the default codec ``llm-codec-smollm2/`` is found with importlib.resources, in a wheel as in a checkout.
The scripts here are run directly, not imported."""
