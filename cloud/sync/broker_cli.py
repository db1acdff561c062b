"""`starfish sync broker-config`: a Mosquitto config, password file and ACL from the cloud's registry.

It reads the cloud's database, so it lives with the cloud; `starfish.cli` mounts it as `sync`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sync.mosquitto import BridgeTo, BrokerOptions, GateAccount, SiteRegistry, write_broker_config

app = typer.Typer(help="MQTT sync between the cloud and the gates.", no_args_is_help=True)


def _secret(env: str, what: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        typer.echo(f"error: set {env} to the {what}", err=True)
        raise typer.Exit(2)
    return value


@app.command("broker-config")
def broker_config(
    site: Annotated[str, typer.Option(help="Site code in the cloud's registry")],
    out: Annotated[Path, typer.Option(help="Folder for mosquitto.conf, passwd, acl and data/")],
    role: Annotated[str, typer.Option(help="site: the resort's broker; cloud: the cloud's broker")] = "site",
    host: Annotated[str, typer.Option(help="Listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 1883,
    cloud_user: Annotated[str, typer.Option(help="The cloud consumer's broker login")] = "cloud",
    cloud_password_env: Annotated[
        str, typer.Option(help="Environment variable with its password")
    ] = "STARFISH_MQTT_PASSWORD",
    bridge_address: Annotated[str | None, typer.Option(help="Site broker: bridge to this cloud broker host")] = None,
    bridge_port: Annotated[int, typer.Option(help="Cloud broker port for the bridge")] = 8883,
    bridge_password_env: Annotated[
        str, typer.Option(help="Environment variable with the bridge's password")
    ] = "STARFISH_BRIDGE_PASSWORD",
    bridge_ca: Annotated[Path | None, typer.Option(help="CA of the cloud broker (TLS bridge)")] = None,
    cloud_instances: Annotated[
        str, typer.Option(help="Cloud hosts' STARFISH_CLOUD_INSTANCE names, comma-separated ('' is the unnamed one)")
    ] = "",
    cloud_workers: Annotated[int, typer.Option(help="Cloud worker processes per host (uvicorn --workers)")] = 1,
) -> None:
    """Write the broker's files; gate passwords come hashed from the cloud database (STARFISH_DATABASE_URL).

    Every cloud process has its own login (`cloud.sync.instance`): ``--cloud-instances ,b --cloud-workers 4``
    makes cloud, cloud-1 .. cloud-3, cloud-b, cloud-b-1 .. cloud-b-3, all with the cloud's password."""
    from sqlalchemy import select

    from cloud.db import make_engine, make_sessionmaker
    from cloud.settings import DatabaseSettings
    from cloud.sites.models import Gate, Site
    from cloud.sync.instance import logins

    if role not in ("site", "cloud"):
        typer.echo("error: --role is site or cloud", err=True)
        raise typer.Exit(2)
    engine = make_engine(DatabaseSettings().database_url)
    with make_sessionmaker(engine)() as session:
        row = session.scalar(select(Site).where(Site.code == site))
        if row is None:
            typer.echo(f"error: no site {site!r} in the registry", err=True)
            raise typer.Exit(2)
        gates = list(session.scalars(select(Gate).where(Gate.site_id == row.id).order_by(Gate.id)))
    engine.dispose()
    missing = [g.code for g in gates if not g.mqtt_hash]
    if missing:
        typer.echo(f"error: gates {', '.join(missing)} have no broker password yet: rotate their secrets", err=True)
        raise typer.Exit(2)
    bridge = None
    if bridge_address:
        bridge = BridgeTo(
            address=bridge_address,
            port=bridge_port,
            username=f"bridge-{site}",
            password=_secret(bridge_password_env, "bridge password"),
            cafile=bridge_ca,
        )
    registry = SiteRegistry(
        site,
        [GateAccount(g.code, g.username, g.mqtt_hash) for g in gates],
        cloud_user,
        _secret(cloud_password_env, "cloud consumer's broker password"),
        bridge=bridge,
        cloud_logins=tuple(logins(cloud_user, [i.strip() for i in cloud_instances.split(",")], max(1, cloud_workers))),
    )
    files = write_broker_config(registry, out, role=role, options=BrokerOptions(host=host, port=port))  # type: ignore[arg-type]
    typer.echo(f"wrote {files.conf}, {files.passwd}, {files.acl} for {len(gates)} gate(s) of {site}")
