"""`starfish cloud ...`: serve the API, migrate the database, create the first admin, face keys and sweep."""

from __future__ import annotations

from typing import Annotated

import typer

from cloud.settings import Settings

app = typer.Typer(help="The cloud service.", no_args_is_help=True)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from exc


@app.command("migrate")
def migrate() -> None:
    """Bring the database (STARFISH_DATABASE_URL) to the latest schema."""
    from cloud.migrate import upgrade

    upgrade(_settings().database_url)
    typer.echo("database is at the latest schema")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (2 suit a 2-core machine)")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Migrate before serving")] = True,
) -> None:
    """Run the API with uvicorn; settings come from STARFISH_* environment variables."""
    import uvicorn

    from cloud.migrate import upgrade

    settings = _settings()
    if migrate_first:
        upgrade(settings.database_url)
    from uvicorn.config import LOGGING_CONFIG

    from cloud.logs import uvicorn_log_config

    log_config = uvicorn_log_config() if settings.log_format == "json" else LOGGING_CONFIG
    uvicorn.run(
        "cloud.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",  # the access log's INFO lines would be dropped anyway: don't build them
        access_log=False,
        log_config=log_config,
    )  # loop and http "auto": uvloop and httptools (dependencies), asyncio and h11 where they are missing


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="Admin user name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a staff account with the admin role (the first one has nobody to create it)."""
    from cloud.db import make_engine, make_sessionmaker
    from cloud.deps import Role
    from cloud.errors import DomainError
    from cloud.staff.service import create_staff

    if len(password) < 10:
        typer.echo("error: the password needs at least 10 characters", err=True)
        raise typer.Exit(2)
    settings = _settings()
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        try:
            create_staff(session, "cli", username, password, Role.ADMIN)
        except DomainError as exc:
            typer.echo(f"error: {exc.en}", err=True)
            raise typer.Exit(2) from exc
    engine.dispose()
    typer.echo(f"admin {username} created")


@app.command("new-feed-epoch")
def new_feed_epoch(
    site: Annotated[list[str] | None, typer.Option(help="Site code (repeatable); default: every site")] = None,
) -> None:
    """After restoring the database from a backup: start the sites' feeds again under a new epoch,
    so every gate fetches a snapshot instead of taking the restored sequence numbers for repeats."""
    from sqlalchemy import select

    from cloud.db import make_engine, make_sessionmaker
    from cloud.sites.models import Site
    from cloud.sync.feed import new_epoch

    engine = make_engine(_settings().database_url)
    with make_sessionmaker(engine)() as session:
        query = select(Site.id, Site.code).order_by(Site.id)
        rows = list(session.execute(query.where(Site.code.in_(site)) if site else query))
        missing = set(site or ()) - {code for _, code in rows}
        if missing:
            typer.echo(f"error: no site {', '.join(sorted(missing))}", err=True)
            raise typer.Exit(2)
        epochs = {code: new_epoch(session, site_id) for site_id, code in rows}
        session.commit()
    engine.dispose()
    for code, epoch in epochs.items():
        typer.echo(f"{code}: feed epoch {epoch}; its gates will fetch a snapshot")


@app.command("key-root")
def key_root() -> None:
    """Print the key-set root's public key: each gate pins it as `sync.key_root`."""
    from models.credential import public_key_b64

    typer.echo(public_key_b64(_settings().keyset_root_key.public_key()))


def _require_site(settings: Settings, site: str) -> None:
    """Exit 2 with a message unless the cloud's database knows the site (a per-site key of a typo is no key)."""
    from sqlalchemy import select

    from cloud.db import make_engine, make_sessionmaker
    from cloud.sites.models import Site

    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        known = session.scalar(select(Site.id).where(Site.code == site)) is not None
    engine.dispose()
    if not known:
        typer.echo(f"error: no site {site}", err=True)
        raise typer.Exit(2)


@app.command("face-key")
def face_key(site: Annotated[str, typer.Option(help="Site code")]) -> None:
    """Print the face key the gates of SITE hold (base64): put it in the file or variable their config names."""
    from models.face import face_key_text, site_face_key

    settings = _settings()
    if settings.face_key is None:
        typer.echo("error: no face key is set (STARFISH_FACE_KEY_FILE)", err=True)
        raise typer.Exit(2)
    _require_site(settings, site)
    typer.echo(face_key_text(site_face_key(settings.face_key, site)))


@app.command("voucher-key")
def voucher_key(site: Annotated[str, typer.Option(help="Site code")]) -> None:
    """Print the voucher key the gates of SITE hold (base64), for their config's vouchers.key_file or key_env."""
    from models.voucher import site_voucher_key, voucher_key_text

    settings = _settings()
    if settings.voucher_key is None:
        typer.echo("error: no voucher key is set (STARFISH_VOUCHER_KEY_FILE)", err=True)
        raise typer.Exit(2)
    _require_site(settings, site)
    typer.echo(voucher_key_text(site_voucher_key(settings.voucher_key, site)))


@app.command("purge-faces")
def purge_faces() -> None:
    """Run the face expiry sweep now: faces of ended passes leave the gates, and the cloud when no pass is left."""
    from cloud.db import make_engine, make_sessionmaker, utcnow
    from cloud.faces.gallery import sweep

    settings = _settings()
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        swept = sweep(session, settings, now=utcnow())
    engine.dispose()
    typer.echo(f"{swept} holder(s) swept")
