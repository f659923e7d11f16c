"""Data shipped with uniaudio, as the packages ``uniaudio_cli.assets.prompts`` and
``uniaudio_cli.assets.checkpoints``.

They live in the repository's top-level ``prompts/`` and ``checkpoints/`` folders; the
``package-dir`` table in pyproject.toml maps them here, so the wheel carries them and an editable
install reads the folders themselves. Find them with :func:`uniaudio_cli.paths.asset_dir`.
"""
