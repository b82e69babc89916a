"""Load a YAML configuration file into a pydantic model, with error locations.

Every validation error is reported as ``FILE:LINE:COL: a.b[2].c: message`` so
an installer on a ladder can find the bad line. Config models reject unknown
keys (a typo must not silently fall back to a default).

Two grades of problem:

* **errors**: the file does not validate (syntax, types, ranges, references);
  nothing can use it, :func:`load_model` raises :class:`ConfigError`.
* **findings**: the file validates, but says something it cannot mean; the
  services start on it (they defend themselves) and log each finding as a
  warning, while ``district check-config`` (``strict=True``) rejects it. Two
  kinds: any number the file sets that is not finite (YAML ``.inf``, ``.nan``,
  ``1.0e+999``, or a string such as ``"inf"`` that pydantic reads as a float),
  and whatever the model's own ``config_findings()`` reports (for a site: a lot
  whose ``full_below`` reserve does not fit its bays, :mod:`contracts.site`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """The base of every configuration model (site, device, camera, engine).

    Unknown keys are an error (a typo must not silently fall back to a
    default) and a loaded configuration is immutable. Numbers must be finite,
    but that is deliberately not a validation error here: a non-finite number
    is a *finding* (module doc), which ``district check-config`` rejects and
    the services only log, so a field sets ``allow_inf_nan=False`` itself
    only where no service may start on it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


log = logging.getLogger(__name__)

#: Where in the file (a pydantic-style path) and what is wrong.
Finding = tuple[tuple[str | int, ...], str]


@runtime_checkable
class HasFindings(Protocol):
    """A configuration model that can say what in it cannot be meant (see module doc)."""

    def config_findings(self) -> list[Finding]: ...


class ConfigError(Exception):
    """A configuration file that cannot be used; ``errors`` lists each problem."""

    def __init__(self, path: str | Path, errors: list[str]) -> None:
        super().__init__(f"{path}: {len(errors)} error(s)\n" + "\n".join(errors))
        self.path = str(path)
        self.errors = errors


def load_model(path: str | Path, model: type[M], *, strict: bool = False) -> M:
    """Read and validate ``path``; raise :class:`ConfigError` (see :func:`parse_model`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_model(text, model, source=str(path), strict=strict)


def parse_model(text: str, model: type[M], *, source: str = "<config>", strict: bool = False) -> M:
    """Validate YAML ``text`` as ``model``.

    Raises :class:`ConfigError` on any error, and with ``strict`` on any finding
    too; without ``strict`` findings are logged as warnings (module doc).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: not valid YAML: {problem}"]) from None
    if data is None:
        data = {}
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            line, col = _locate(root, loc)
            errors.append(f"{source}:{line}:{col}: {_dotted(loc) or '<root>'}: {err['msg']}")
        raise ConfigError(source, errors) from None
    findings = list(_non_finite(result, ()))
    if isinstance(result, HasFindings):
        findings += result.config_findings()
    located = sorted(((_locate(root, loc), loc, message) for loc, message in findings), key=lambda f: f[0])
    reports = [f"{source}:{ln}:{cn}: {_dotted(loc) or '<root>'}: {message}" for (ln, cn), loc, message in located]
    if reports and strict:
        raise ConfigError(source, reports)
    for report in reports:
        log.warning("%s (district check-config rejects this)", report)
    return result


def _non_finite(value: object, loc: tuple[str | int, ...]) -> Iterator[Finding]:
    """Non-finite floats among the values the file set (defaults are the code's business)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield loc, f"must be a finite number, not {value}"
    elif isinstance(value, BaseModel):
        fields = type(value).model_fields
        for name in (n for n in fields if n in value.model_fields_set):
            yield from _non_finite(getattr(value, name), (*loc, fields[name].alias or name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*loc, str(key)))


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _locate(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int, int]:
    """Line and column (1-based) of the deepest node of ``loc`` that exists."""
    if node is None:
        return 1, 1
    best = node
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value if not isinstance(value, yaml.ScalarNode) or value.value else key
                    break
            else:
                if isinstance(part, str):
                    # A discriminated union puts the tag ('modbus_bay_controller')
                    # in the path; it names no key, so look past it.
                    continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = best = child
    return best.start_mark.line + 1, best.start_mark.column + 1
