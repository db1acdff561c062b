"""`python -m starfish ...` runs the `starfish` command."""

from starfish.cli import app

app()
