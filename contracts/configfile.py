"""Load a YAML configuration file into a pydantic model, with error locations.

Every validation error is reported as ``FILE:LINE:COL: a.b[2].c: message`` so
an installer on a ladder can find the bad line. Config models reject unknown
keys (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file that cannot be used; ``errors`` lists each problem."""

    def __init__(self, path: str | Path, errors: list[str]) -> None:
        super().__init__(f"{path}: {len(errors)} error(s)\n" + "\n".join(errors))
        self.path = str(path)
        self.errors = errors


def load_model(path: str | Path, model: type[M]) -> M:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_model(text, model, source=str(path))


def parse_model(text: str, model: type[M], *, source: str = "<config>") -> M:
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
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            line, col = _locate(root, loc)
            errors.append(f"{source}:{line}:{col}: {_dotted(loc) or '<root>'}: {err['msg']}")
        raise ConfigError(source, errors) from None


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
