"""The import graph between the packages (issue 7, "What it must show").

* The components (``edge``, ``gateway``, ``server``, ``firmware_sim``) and the
  shared low-level packages (``contracts``, ``common``) never import
  ``district``, the CLI and demo package: ``district`` sits on top and may
  import them, not the other way round.
* ``contracts`` and ``common`` import no third-party MQTT, HTTP or database
  client: they describe and help, each component owns its outside systems.

Read from the source (the AST of every module), not by importing it, so a
lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Packages that must not import ``district``.
BELOW_DISTRICT = ("edge", "gateway", "server", "firmware_sim", "contracts", "common")
#: Top-level names of third-party client libraries for MQTT, HTTP and databases.
CLIENT_LIBRARIES = frozenset({"paho", "httpx", "urllib3", "influxdb_client", "requests", "pymodbus"})


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (relative imports are the package's own)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def offenders(packages: tuple[str, ...], forbidden: frozenset[str]) -> list[str]:
    """``file: module`` for each import whose top-level name is in ``forbidden``."""
    found = []
    for package in packages:
        for path in modules(package):
            for name in sorted(imported(path)):
                if name.split(".")[0] in forbidden:
                    found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_the_scanned_packages_exist() -> None:
    for package in BELOW_DISTRICT:
        assert modules(package), f"no modules under {package}/"


def test_the_scan_sees_lazy_and_dotted_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os.path\nfrom . import sibling\ndef f():\n    from district.cli import main\n")
    assert imported(source) == {"os.path", "district.cli"}


def test_components_and_shared_packages_do_not_import_district() -> None:
    assert offenders(BELOW_DISTRICT, frozenset({"district"})) == []


def test_common_imports_no_client_library_but_the_influxdb_and_mqtt_session_helpers() -> None:
    """common/influxdb.py (errors, auth and quoting shared by the gateway's writer and the server's
    reader) uses httpx, the project's one declared HTTP library; common/mqtt_session.py (the one place
    that knows how an MQTT 3.1.1 session differs from a 5 one, for edge, gateway and server) builds
    paho clients, the project's one MQTT library; nothing else in common touches a client."""
    found = offenders(("common",), CLIENT_LIBRARIES)
    assert {f for f in found if not f.startswith("common/mqtt_session.py: paho.")} == {"common/influxdb.py: httpx"}


def test_contracts_import_no_client_library() -> None:
    assert offenders(("contracts",), CLIENT_LIBRARIES) == []
