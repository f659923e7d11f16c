"""``python -m uniaudio_cli`` (and ``accelerate launch -m uniaudio_cli``) runs the CLI."""

from uniaudio_cli.cli import main

main()
