"""The server process leaves its start-up heap out of garbage collection (``server.app.freeze_startup_heap``)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _frozen_after_start(freeze: bool, state_dir: Path) -> int:
    """Start an app's lifespan in a fresh interpreter (freezing is process-wide) and report the freeze count."""
    code = textwrap.dedent(
        f"""
        import asyncio, gc
        from pathlib import Path
        from contracts.configfile import load_model
        from contracts.site import SiteConfig
        from district.demo import DEMO_SITE
        from server.app import create_app
        from server.settings import ServerSettings
        settings = ServerSettings(site_config=DEMO_SITE, state_dir=Path({str(state_dir)!r}))
        app = create_app(settings, connect=False, freeze_heap={freeze})
        async def main():
            async with app.router.lifespan_context(app):
                print(gc.get_freeze_count())
        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


def test_the_server_process_freezes_its_start_up_heap_and_tests_do_not(tmp_path: Path) -> None:
    assert _frozen_after_start(True, tmp_path / "a") > 10_000  # the site, the live state, the app
    assert _frozen_after_start(False, tmp_path / "b") == 0
    assert gc.get_freeze_count() == 0  # this test process was left alone
