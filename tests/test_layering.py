"""The one-way house: imports run models <- sync <- edge | cloud, drivers <- edge (and drivers.face <- cloud,
lazily), and the `starfish` command loads only the sub-command it runs (README, "The house")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"models", "drivers", "sync", "edge", "cloud", "demo", "harness", "starfish", "tests", "bench"}
PRODUCT = ("models", "drivers", "sync", "edge", "cloud")
# Which project packages each package may import (its own always).
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "drivers": set(),
    "sync": {"models"},
    "edge": {"models", "drivers", "sync"},
    "cloud": {"models", "sync", "drivers"},
    "harness": {*PRODUCT},
    "demo": {*PRODUCT, "harness"},
    "starfish": set(),  # at module level; its sub-commands are imported by name when used
}
WHY = {
    "models": "models/ is the wire contract and imports no other part of the project",
    "drivers": "drivers/ are mini-libraries and import no other part of the project",
    "sync": "sync/ may import only models/; what it needs of a gate or the cloud it receives as a Protocol",
    "edge": "edge/ may import only models, drivers and sync",
    "cloud": "cloud/ may import only models, sync and drivers",
    "harness": "harness/ may import only the product (models, drivers, sync, edge, cloud)",
    "demo": "demo/ may import only the product and harness/",
    "starfish": "starfish/ imports each sub-command only when it is used, never at module level",
}
MAX_LINES = 450
SIZE_CHECKED = (*PRODUCT, "starfish")


def python_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/: a renamed package must not pass unchecked"
    return files


def module_names(*packages: str) -> list[str]:
    """Every module of `packages`, dotted (`edge.store.journal`), packages' __init__ as the package."""
    names = []
    for package in packages:
        for path in python_files(package):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_modules(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, absolute module name, at module level) for every import in the file, wherever it stands
    (not at module level: in a function, or under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # edge/cli.py and edge/__init__.py: edge
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, functions) for n in ast.walk(f) if n is not f}
    # `if TYPE_CHECKING:` imports are never loaded: they count as lazy as a function's
    type_only = (f for f in ast.walk(tree) if isinstance(f, ast.If) and ast.unparse(f.test).endswith("TYPE_CHECKING"))
    in_function |= {id(n) for f in type_only for body in f.body for n in ast.walk(body)}
    for node in ast.walk(tree):
        at_module_level = id(node) not in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, at_module_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                yield node.lineno, f"{base}.{node.module}" if node.module else base, at_module_level
            else:
                yield node.lineno, node.module or "", at_module_level
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value, at_module_level


# The cloud may use one driver, the face encoder, and only inside functions: it enrolls photos, and
# `starfish cloud serve` must not load OpenCV or dlib to start.
CLOUD_DRIVERS = "drivers.face"


def _cloud_driver_misuse(module: str, at_module_level: bool) -> str | None:
    if module != CLOUD_DRIVERS and not module.startswith(CLOUD_DRIVERS + "."):
        return f"imports {module}: cloud/ may use only {CLOUD_DRIVERS} of drivers/"
    if at_module_level:
        return f"imports {module} at module level: cloud/ imports {CLOUD_DRIVERS} inside functions (lazily)"
    return None


def layering_violations() -> list[str]:
    found: set[tuple[str, int, str]] = set()
    for package, allowed in ALLOWED.items():
        for path in python_files(package):
            for line, module, at_module_level in imported_modules(path):
                target = module.split(".")[0]
                if package == "cloud" and target == "drivers":
                    misuse = _cloud_driver_misuse(module, at_module_level)
                    if misuse is not None:
                        found.add((str(path.relative_to(ROOT)), line, misuse))
                    continue
                if target not in PROJECT or target == package or target in allowed:
                    continue
                if package == "starfish" and not at_module_level and target not in ("tests", "bench"):
                    continue
                found.add((str(path.relative_to(ROOT)), line, f"imports {module}: {WHY[package]}"))
    return [f"{path}:{line} {what}" for path, line, what in sorted(found)]


def test_imports_run_one_way_through_the_house() -> None:
    violations = layering_violations()
    assert not violations, "imports against the layering:\n  " + "\n  ".join(violations)


def modules_loaded_by(script: str) -> set[str]:
    """Run `script` in a fresh interpreter and return the names of the modules it left loaded."""
    code = textwrap.dedent(script) + "\nimport json, sys\nprint('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    last = run.stdout.rstrip().rsplit("\nMODULES ", 1)[-1]
    return set(json.loads(last))


def loaded(modules: set[str], *prefixes: str) -> list[str]:
    """The modules among `modules` that are one of the `prefixes` or inside one of them."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


GATE_YAML = """\
gate: {gate_id: g1, site_id: nanshan}
store: {path: STORE}
barrier: {type: modbus_tcp, host: 127.0.0.1}
"""

RESOLVE = """\
import typer.main
from starfish.cli import app

def resolve(*argv):
    command = typer.main.get_command(app)
    ctx = command.make_context("starfish", list(argv))
    path = list(argv)
    while path:
        command = command.get_command(ctx, path.pop(0))
        assert command is not None, argv
        if not hasattr(command, "get_command"):
            break
    command.make_context(command.name, path, parent=ctx)
"""


@pytest.fixture
def gate_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(GATE_YAML.replace("STORE", str(tmp_path / "gate.db")))
    return path


def test_a_gate_run_loads_no_cloud_web_or_database_code(gate_yaml: Path) -> None:
    modules = modules_loaded_by(
        RESOLVE
        + f"""
resolve("gate", "run", "--config", {str(gate_yaml)!r})
import importlib
for name in {module_names("edge", "sync", "drivers", "models")!r}:  # all a gate may load, lazy imports too
    importlib.import_module(name)
from edge.config import load_config
load_config({str(gate_yaml)!r})
"""
    )
    assert {"edge.daemon", "sync.gate.client", "drivers.barrier", "paho.mqtt.client"} <= modules
    # Starlette and uvicorn are the gate's own technician page (edge.web), loaded only with a web: block.
    assert not loaded(modules, "fastapi", "sqlalchemy", "pydantic_settings", "alembic", "cloud")


def test_a_gate_without_a_web_block_loads_no_web_server(gate_yaml: Path) -> None:
    modules = modules_loaded_by(
        RESOLVE + f'resolve("gate", "run", "--config", {str(gate_yaml)!r})\nimport edge.daemon\n'
    )
    assert "edge.daemon" in modules
    assert not loaded(modules, "starlette", "uvicorn", "prometheus_client", "argon2")


def test_a_cloud_serve_loads_no_camera_or_gate_code() -> None:
    modules = modules_loaded_by(
        RESOLVE
        + """
resolve("cloud", "serve", "--port", "8000")
import uvicorn, cloud.migrate, cloud.app
"""
    )
    assert "cloud.app" in modules
    assert not loaded(modules, "cv2", "edge", "drivers", "pyzbar", "zxingcpp", "serial", "pymodbus")


def test_reading_a_gate_config_loads_no_mqtt_client(gate_yaml: Path) -> None:
    modules = modules_loaded_by(f"from edge.config import load_config\nload_config({str(gate_yaml)!r})")
    assert not loaded(modules, "paho", "cloud", "cv2")


def test_starfish_help_lists_every_sub_command_without_importing_one() -> None:
    modules = modules_loaded_by(
        """
from starfish.cli import app
try:
    app(["--help"])
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""
    )
    assert not loaded(modules, "edge", "cloud", "demo", "sync", "drivers", "harness", "models")


def test_starfish_help_texts_are_the_sub_commands_own() -> None:
    from starfish.cli import SUBCOMMANDS, load_subcommand

    mismatched = {
        name: (entry.help, load_subcommand(name).help)
        for name, entry in SUBCOMMANDS.items()
        if load_subcommand(name).help != entry.help
    }
    assert not mismatched, "starfish/cli.py SUBCOMMANDS help differs from the sub-command's own: " + repr(mismatched)


def test_no_product_file_is_over_450_lines() -> None:
    offenders = []
    for package in SIZE_CHECKED:
        for path in python_files(package):
            if "migrations" in path.parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not offenders, (
        f"product files over {MAX_LINES} lines (split them by what they do; migrations aside):\n  "
        + "\n  ".join(offenders)
    )
