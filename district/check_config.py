"""``district check-config FILE``: validate a site or device configuration.

The file's top-level key says what it is: ``site:`` for a site configuration,
``device:`` for an edge device configuration. Every error is printed with its
file, line, column and path; the exit status is 1 when there is any.

Stricter than the services, which start on a file with *findings* and only log
them (:mod:`contracts.configfile`): here those are errors too. They are: a
number that is not finite (``.inf``, ``.nan``) anywhere in the file, and a
parking lot's ``full_below`` that does not fit its bays. ``full_below`` is a
reserve: the lot shows ``full`` while fewer than ``full_below`` bays are free
(and always when none is), so it must be less than the lot's bay count, or
the lot would show full with every bay free; 1 (the default) is always allowed.
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
            load_model(path, model, strict=True)
        except ConfigError as exc:
            failed += 1
            for line in exc.errors:
                print(line, file=sys.stderr)
            continue
        print(f"{path}: ok ({model.__name__})")
    return 1 if failed else 0
