"""`starfish`: the command's one composition root; each sub-command is imported only when it is used.

A gate runs `starfish gate run` and so loads no FastAPI, SQLAlchemy or cloud code; the cloud runs
`starfish cloud serve` and loads no OpenCV or gate code. `starfish --help` lists every sub-command
from the table below without importing any of them (tests/test_layering.py checks that the table's
help texts are the sub-commands' own).
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import NamedTuple

import typer
import typer.core
import typer.main

# typer 0.29 carries its own click as typer._click; its command types have no public name.
from typer import _click as click


class SubCommand(NamedTuple):
    """Where a sub-command lives: the Typer app `module:attribute`, one command of it (or all) and its help."""

    target: str
    pick: str | None
    help: str


SUBCOMMANDS: dict[str, SubCommand] = {
    "gate": SubCommand("edge.cli:app", "gate", "Run or query one gate."),
    "decode": SubCommand(
        "edge.cli:app",
        "decode",
        "Print PATH<TAB>TEXT for each image (TEXT empty when nothing decoded; \\, tab, CR, LF escaped).",
    ),
    "keys": SubCommand("edge.cli:app", "keys", "Ticket-signing keys."),
    "ticket": SubCommand("edge.cli:app", "ticket", "Issue signed tickets (needs the private key)."),
    "face": SubCommand("edge.face_cli:app", None, "Face tools for the technician."),
    "cloud": SubCommand("cloud.cli:app", None, "The cloud service."),
    "sync": SubCommand("cloud.sync.broker_cli:app", None, "MQTT sync between the cloud and the gates."),
    "demo": SubCommand(
        "demo.cli:app",
        "demo",
        "The whole resort on one machine: cloud, brokers, two gates and a stream of skiers, in a live table.",
    ),
}


def load_subcommand(name: str) -> click.Command:
    """Import the sub-command `name` and turn its Typer app into a click command."""
    target, pick, _ = SUBCOMMANDS[name]
    module_name, attribute = target.split(":")
    sub_app = getattr(importlib.import_module(module_name), attribute)
    group = typer.main.get_group(sub_app)
    command = group if pick is None else group.commands[pick]
    command.name = name
    return command


class LazyGroup(typer.core.TyperGroup):
    """The root group: commands come from SUBCOMMANDS, imported on first use; help lists them unimported."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        if self._listing:
            return typer.core.TyperCommand(cmd_name, help=SUBCOMMANDS[cmd_name].help)
        return load_subcommand(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.UsageError as exc:  # typer suggests from self.commands, empty here
            matches = get_close_matches(args[0], list(SUBCOMMANDS)) if args else []
            if matches and "Did you mean" not in exc.message:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(cls=LazyGroup, help="Starfish Gate: ski-resort turnstiles that decide offline.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Starfish Gate: ski-resort turnstiles that decide offline."""


if __name__ == "__main__":
    app()
