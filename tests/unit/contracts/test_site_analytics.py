"""The site configuration's analytics keys: street lines, zone boundaries, areas, k; errors located by line."""

from __future__ import annotations

import pytest

from contracts.configfile import ConfigError, parse_model
from contracts.site import DEFAULT_K, SiteConfig

BASE = """\
site: {id: s, name: S}
zones:
  - {id: street, name: Street}
  - id: shop
    name: Shop
    street_line: {camera: c1, line: pavement}
  - {id: mall, name: Mall}
parking:
  - {id: lot1, name: Lot, zone: mall, coords: {lat: 51, lng: 13}, bays: {count: 5}}
cameras:
  - id: c1
    device: d
    lines:
      - {id: pavement, zone: street}
      - {id: door, zone: shop}
      - {id: arcade, zone: mall, from_zone: shop}
"""


def test_a_valid_analytics_configuration_and_its_defaults() -> None:
    site = parse_model(BASE, SiteConfig)
    assert site.analytics.k == DEFAULT_K == 10
    assert site.boundaries == {("shop", "mall"): [("c1", "arcade")]}
    # No areas configured: one per zone with lots, named after it.
    areas = site.analytics_areas()
    assert [(a.id, a.lots, a.zones) for a in areas] == [("mall", ["lot1"], ["mall"])]
    configured = parse_model(BASE + "analytics: {k: 25, areas: [{id: c, lots: [lot1], zones: [shop, mall]}]}\n",
                             SiteConfig)  # fmt: skip
    assert configured.analytics.k == 25 and configured.area("c") is not None and configured.area("mall") is None


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("line: pavement}", "line: nope}"), "<config>:6:18: zones[1].street_line", "names no camera line"),
        (("line: pavement}", "line: door}"), "<config>:6:18: zones[1].street_line", "leads into this zone"),
        (("from_zone: shop", "from_zone: moon"), "<config>:16:45: cameras[0].lines[2].from_zone", "unknown zone"),
        (("from_zone: shop", "from_zone: mall"), "<config>:16:45: cameras[0].lines[2].from_zone", "leads into"),
        (("street_line: {", "street_lines: {"), "<config>:6:19: zones[1].street_lines", "Extra inputs"),
    ],
)
def test_bad_references_are_errors_located_by_line(change: tuple[str, str], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_model(BASE.replace(*change), SiteConfig)
    assert len(exc.value.errors) == 1
    assert exc.value.errors[0].startswith(where) and message in exc.value.errors[0]


def test_bad_areas_and_k_are_located() -> None:
    text = BASE + (
        "analytics:\n  k: 0\n  areas:\n"
        "    - {id: a, lots: [lot9], zones: [mall]}\n    - {id: a, lots: [lot1], zones: [x]}\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_model(text, SiteConfig)
    assert exc.value.errors == ["<config>:18:6: analytics.k: Input should be greater than or equal to 1"]
    with pytest.raises(ConfigError) as exc:
        parse_model(text.replace("k: 0", "k: 10"), SiteConfig)
    assert exc.value.errors == [
        "<config>:20:12: analytics.areas[0].id: duplicate area id 'a'",
        "<config>:20:22: analytics.areas[0].lots[0]: area a: unknown parking lot 'lot9'",
        "<config>:21:12: analytics.areas[1].id: duplicate area id 'a'",
        "<config>:21:37: analytics.areas[1].zones[0]: area a: unknown zone 'x'",
    ]
