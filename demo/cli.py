"""`starfish demo`: the whole resort on one machine (`demo.resort`), or one gate with `--single` (`demo.single_gate`).

`app` holds the one command `demo`; `starfish.cli` mounts it as `starfish demo`, and
`python -m demo.cli` runs it alone.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The whole resort on one machine, or one gate.")


@app.command("demo")
def demo(
    duration: Annotated[float, typer.Option(help="Run the skier stream this many seconds")] = 60.0,
    cut_at: Annotated[float | None, typer.Option(help="Cut the cloud link this many seconds in")] = None,
    restore_at: Annotated[float | None, typer.Option(help="Restore the cloud link this many seconds in")] = None,
    skiers_per_second: Annotated[float, typer.Option(help="Skiers buying a ticket per second")] = 1.5,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the resort's databases, logs and broker data here (else a temp dir)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the skier stream, to repeat a run")] = None,
    single: Annotated[
        bool, typer.Option("--single", help="The first demo instead: one gate, a camera, a scripted queue, no sync")
    ] = False,
) -> None:
    """The whole resort on one machine: cloud, brokers, two gates and a stream of skiers, in a live table."""
    if single:
        from demo.single_gate import run_demo

        sys.exit(asyncio.run(run_demo(duration)))
    if skiers_per_second <= 0 or duration <= 0:
        typer.echo("error: --duration and --skiers-per-second must be positive", err=True)
        raise typer.Exit(2)
    if restore_at is not None and (cut_at is None or restore_at <= cut_at):
        typer.echo("error: --restore-at needs an earlier --cut-at", err=True)
        raise typer.Exit(2)
    from demo.resort import Options, run_resort_demo

    options = Options(duration, cut_at, restore_at, skiers_per_second, workdir, seed)
    sys.exit(run_resort_demo(options))


if __name__ == "__main__":
    app()
