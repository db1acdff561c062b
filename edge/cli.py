"""The gate's tools: `gate run` (the daemon), `gate check`, `decode`, `keys generate`, `ticket issue`.

`starfish.cli` mounts them under the `starfish` command; `python -m edge.cli gate run` runs a gate
without the rest of the command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from edge.config import ConfigError, EdgeConfig, load_config

app = typer.Typer(help="The gate's tools.", no_args_is_help=True)
gate_app = typer.Typer(help="Run or query one gate.", no_args_is_help=True)
keys_app = typer.Typer(help="Ticket-signing keys.", no_args_is_help=True)
ticket_app = typer.Typer(help="Issue signed tickets (needs the private key).", no_args_is_help=True)
app.add_typer(gate_app, name="gate")
app.add_typer(keys_app, name="keys")
app.add_typer(ticket_app, name="ticket")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Gate configuration (YAML)")]


def _load(path: Path) -> EdgeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@gate_app.command("run")
def gate_run(config: ConfigOpt) -> None:
    """Run the gate daemon until SIGTERM."""
    from drivers.errors import DriverError
    from edge.daemon import run_from_config
    from edge.store import StoreError

    cfg = _load(config)
    from edge.logs import configure

    configure(cfg.log_level, cfg.log_format)
    if cfg.log_level != "DEBUG":
        # The barrier driver reports each fault once, naming the board; pymodbus would repeat it.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        code = asyncio.run(run_from_config(cfg, config))
    except (StoreError, DriverError, OSError) as exc:
        typer.echo(f"error: cannot start gate {cfg.gate.gate_id}: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@gate_app.command("check")
def gate_check(config: ConfigOpt, code: Annotated[str, typer.Argument(help="The scanned text")]) -> None:
    """Print, as JSON, the decision the gate would make now; touches neither barrier nor journal."""
    from edge.gate import GateService
    from edge.reasons import reason
    from edge.store import GateStore, StoreError

    cfg = _load(config)
    if not cfg.store.path.exists():
        typer.echo(f"note: no gate store at {cfg.store.path}; deciding on an empty cache", err=True)
    try:
        store = GateStore(cfg.store.path if cfg.store.path.exists() else ":memory:")
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    service = GateService(store=store, config=cfg.gate)
    service.use_keys(cfg.trusted_keys)
    d = service.evaluate(code.encode(), datetime.now(UTC)).decision
    out = {
        "admit": d.admit,
        "code": d.code,
        "reason": reason(d.code, "en"),
        "reason_zh": reason(d.code, "zh"),
        "ticket_id": d.ticket_id,
    }
    store.close()
    typer.echo(json.dumps(out, ensure_ascii=False))


@gate_app.command("hash-password")
def gate_hash_password() -> None:
    """Ask for a password twice and print its argon2id hash, for `web.break_glass.password_hash`."""
    from argon2 import PasswordHasher

    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        typer.echo("error: use at least 10 characters (as the cloud asks of staff passwords)", err=True)
        raise typer.Exit(2)
    typer.echo(PasswordHasher().hash(password))


@gate_app.command("web-cert")
def gate_web_cert(
    out: Annotated[Path, typer.Option(help="Writes OUT.pem (certificate) and OUT.key (private key, mode 0600)")],
    host: Annotated[list[str], typer.Option(help="The gate's LAN address or DNS name (repeat for several)")],
    days: Annotated[int, typer.Option(min=1, max=3650, help="Valid for this many days")] = 825,
) -> None:
    """Make a self-signed certificate for the technician page (`web.tls_cert`, `web.tls_key`).

    Browsers warn about a self-signed certificate until it (or a resort CA that signed it) is trusted on the
    technicians' laptops and phones; its fingerprint, printed here, is what they compare the first time."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = out.with_suffix(".pem"), out.with_suffix(".key")
    for path in (cert_path, key_path):
        if path.exists():
            typer.echo(f"error: {path} exists; refusing to overwrite it", err=True)
            raise typer.Exit(2)
    names: list[x509.GeneralName] = []
    for h in host:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[0])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    typer.echo(f"{cert_path}\n{key_path}\nSHA-256 fingerprint: {cert.fingerprint(hashes.SHA256()).hex(':')}")


@app.command("decode")
def decode(
    images: Annotated[list[Path], typer.Argument(help="Image files")],
    decoder: Annotated[str, typer.Option(help="zxing, pyzbar, opencv or chain")] = "",
) -> None:
    """Print PATH<TAB>TEXT for each image (TEXT empty when nothing decoded; \\, tab, CR, LF escaped)."""
    from drivers.errors import DriverError
    from drivers.qr import DEFAULT_DECODER, load_image, make_decoder

    try:
        dec = make_decoder(decoder or DEFAULT_DECODER)
    except (ValueError, DriverError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    failed = False
    for path in images:
        try:
            codes = dec.decode(load_image(path))
        except DriverError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed = True
            codes = []
        text = _one_line(codes[0].text) if codes else ""
        typer.echo(f"{path}\t{text}")
    if failed:
        raise typer.Exit(1)


def _one_line(text: str) -> str:
    """Escape backslash, tab, CR and LF so each file stays on one PATH<TAB>TEXT line."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


@keys_app.command("generate")
def keys_generate(
    private_key: Annotated[Path, typer.Option(help="Where to write the private key (PEM, mode 0600)")],
) -> None:
    """Make an Ed25519 signing key; prints the public key for gate configs."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from models.credential import public_key_b64

    if private_key.exists():
        typer.echo(f"error: {private_key} exists; refusing to overwrite a signing key", err=True)
        raise typer.Exit(2)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    typer.echo(public_key_b64(key.public_key()))


@ticket_app.command("issue")
def ticket_issue(
    private_key: Annotated[Path, typer.Option(help="PEM private key")],
    ticket_no: Annotated[int, typer.Option(help="Ticket number")],
    site: Annotated[str, typer.Option(help="Code of the site where the ticket is valid (as gates know it)")],
    kind: Annotated[str, typer.Option(help="day, time_window, season or punch")] = "day",
    key_id: Annotated[int, typer.Option(help="Key id the gates know this key by")] = 1,
    days: Annotated[int, typer.Option(help="Valid for this many days from now")] = 1,
    entries: Annotated[int | None, typer.Option(help="Entries (punch / single use)")] = None,
    window_minutes: Annotated[int | None, typer.Option(help="time_window length")] = None,
    png: Annotated[Path | None, typer.Option(help="Also write the QR code as PNG")] = None,
) -> None:
    """Print a signed ticket token (and optionally its QR image)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from models import ProductKind
    from models.credential import issue

    key = load_pem_private_key(private_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        typer.echo("error: not an Ed25519 private key", err=True)
        raise typer.Exit(2)
    now = datetime.now(UTC)
    token = issue(
        key,
        key_id=key_id,
        kind=ProductKind(kind),
        ticket_no=ticket_no,
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=days),
        entries=entries,
        window_minutes=window_minutes,
        site=site,
    )
    if png is not None:
        import segno

        segno.make(token, error="M", micro=False).save(str(png), scale=6, border=4)
    typer.echo(token)


if __name__ == "__main__":
    app()
