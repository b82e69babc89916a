"""The console's shipped files: npm dependencies as the lock pins them, licences beside them, nothing remote.

``scripts/console-assets`` copies the browser dependencies into
``server/console/static/vendor/`` with a MANIFEST.json; these tests hold the
committed copies to the lock (``console/package-lock.json``) and to the
manifest's hashes, so a hand-edited or stale vendor file fails here, and
check that the page references only files of its own package.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from server.console import STATIC

ROOT = Path(__file__).resolve().parents[3]
VENDOR = STATIC / "vendor"


def test_vendor_files_are_what_the_lock_pins() -> None:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    lock = json.loads((ROOT / "console" / "package-lock.json").read_text())
    wanted = json.loads((ROOT / "console" / "package.json").read_text())["dependencies"]
    assert set(manifest["packages"]) == set(wanted)
    for name, entry in manifest["packages"].items():
        locked = lock["packages"][f"node_modules/{name}"]
        assert entry["version"] == locked["version"] == wanted[name], name  # exact pins, no ranges
        assert entry["integrity"] == locked["integrity"]
        for file, digest in entry["files"].items():
            assert hashlib.sha256((VENDOR / file).read_bytes()).hexdigest() == digest, file
    shipped = {p.name for p in VENDOR.iterdir()} - {"MANIFEST.json", "THIRD_PARTY_LICENSES"}
    assert shipped == {f for e in manifest["packages"].values() for f in e["files"]}


def test_every_vendored_package_has_its_licence_noted() -> None:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    notices = (VENDOR / "THIRD_PARTY_LICENSES").read_text()
    for name, entry in manifest["packages"].items():
        assert f"{name} {entry['version']} ({entry['license']})" in notices
    assert "Permission is hereby granted" in notices  # uPlot's MIT text, whole


def test_the_page_loads_only_its_own_files() -> None:
    index = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', index)
    assert refs, "no references found"
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"{ref}: a remote resource"
        if not ref.startswith("../"):  # links to the API itself (OpenAPI)
            assert (STATIC / ref).is_file(), f"{ref}: not in the package"
    script = (STATIC / "console.js").read_text()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script), "the script names a remote host"
