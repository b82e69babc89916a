"""The footfall bench's candidate settings (``--set``) and its point-only rows (``--point-only``)."""

from __future__ import annotations

import math

import pytest

from bench.forecast.footfall import _share, config_with
from server.forecast.service import ZONE_CONFIG


def test_set_changes_only_the_named_fields_with_their_types() -> None:
    cfg = config_with(ZONE_CONFIG, ["recent_day=true", "learning_rate=0.1", "n_estimators=200"])
    assert (cfg.recent_day, cfg.learning_rate, cfg.n_estimators) == (True, 0.1, 200)
    assert cfg.stride == ZONE_CONFIG.stride and cfg.steps_per_day == ZONE_CONFIG.steps_per_day
    assert config_with(ZONE_CONFIG, []) == ZONE_CONFIG


@pytest.mark.parametrize("bad", ["no_such_field=1", "learning_rate", "recent_day=yes", "n_estimators=1.5"])
def test_set_refuses_what_it_cannot_apply(bad: str) -> None:
    with pytest.raises(SystemExit, match="--set"):
        config_with(ZONE_CONFIG, [bad])


def test_point_only_rows_have_no_coverage_not_a_zero_one() -> None:
    full = [{"hours": 48, "covered": 40, "below": 5, "above": 3}, {"hours": 24, "covered": 20, "below": 4, "above": 0}]
    assert _share(full, "covered") == pytest.approx(60 / 72)
    assert _share(full, "below") == pytest.approx(9 / 72)
    assert math.isnan(_share([{"hours": 48}], "covered"))
    assert math.isnan(_share([], "covered"))
