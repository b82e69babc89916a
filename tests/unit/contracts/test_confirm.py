"""The end-to-end confirmation payload: ranges, encoding, and what a receiver refuses."""

from __future__ import annotations

import json

import pytest

from contracts import confirm


def test_ranges_merge_and_sort() -> None:
    assert confirm.ranges([3, 1, 2, 7, 9, 8, 2]) == [(1, 3), (7, 9)]
    assert confirm.ranges([]) == []
    assert confirm.ranges_merge([(5, 9), (1, 2), (3, 4), (8, 12), (20, 20)]) == [(1, 12), (20, 20)]


def test_encode_splits_long_range_lists_and_decodes_back() -> None:
    seqs = list(range(0, 2 * confirm.MAX_RANGES + 10, 2))  # every other seq: one range each
    payloads = confirm.encode("dev-1", "e1", seqs, by="gw")
    assert len(payloads) == 2  # 1,005 single-seq ranges: 1,000 + 5
    back = [s for p in payloads for lo, hi in confirm.decode(p).seqs for s in range(lo, hi + 1)]
    assert back == seqs
    assert confirm.encode("dev-1", "e1", []) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        json.dumps({"device_id": "d", "epoch": "e", "seqs": []}).encode(),
        json.dumps({"device_id": "d", "epoch": "e", "seqs": [[5, 3]]}).encode(),
        json.dumps({"device_id": "d", "epoch": "e", "seqs": [[-1, 3]]}).encode(),
        json.dumps({"device_id": "d/#", "epoch": "e", "seqs": [[1, 3]]}).encode(),
        json.dumps({"device_id": "d", "epoch": "e", "seqs": [[1, 2**60]]}).encode(),
    ],
    ids=["garbage", "empty", "backwards", "negative", "wildcard-id", "beyond-wire-int"],
)
def test_bad_confirmations_are_refused_with_one_error_type(payload: bytes) -> None:
    with pytest.raises(confirm.ConfirmationRejected):
        confirm.decode(payload)
