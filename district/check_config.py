"""``district check-config FILE``: validate a site or device configuration.

The file's top-level key says what it is: ``site:`` for a site configuration,
``device:`` for an edge device configuration. Every error is printed with its
file, line, column and path; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

import yaml
from pydantic import BaseModel

from contracts.configfile import ConfigError, load_model
from contracts.site import SiteConfig


def _model_for(path: Path) -> type[BaseModel]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return SiteConfig  # load_model reports the read or syntax error with its location
    if isinstance(data, dict) and "device" in data and "site" not in data:
        from edge.config import DeviceConfig

        return cast(type[BaseModel], DeviceConfig)
    return SiteConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district check-config", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        model = _model_for(path)
        try:
            load_model(path, model)
        except ConfigError as exc:
            failed += 1
            for line in exc.errors:
                print(line, file=sys.stderr)
            continue
        print(f"{path}: ok ({model.__name__})")
    return 1 if failed else 0
