"""The baselines solve Mélange's ground exactly as described, on cases small enough to check by hand."""

import pytest

from optimizer.baselines import GpuOffer, best_single_class, melange

SMALL = (0, 0)  # short requests
LONG = (5, 5)  # long requests

# A cheap GPU that is fast on short requests and useless on long ones, a dear one good at both.
CHEAP = GpuOffer("cheap", 1.0, {SMALL: 10.0, LONG: 0.1})
DEAR = GpuOffer("dear", 4.0, {SMALL: 20.0, LONG: 2.0})


def test_best_single_class_takes_the_cheapest_type_that_serves_everything():
    demand = {SMALL: 10.0, LONG: 2.0}
    # cheap: 10/10 + 2/0.1 = 21 GPUs = $21; dear: 10/20 + 2/2 = 1.5 -> 2 GPUs = $8.
    result = best_single_class(demand, [CHEAP, DEAR])
    assert (result.devices, result.usd_per_hour) == ({"dear": 2}, 8.0)


def test_melange_mixes_types_by_bucket():
    demand = {SMALL: 10.0, LONG: 2.0}
    # Short requests on one cheap GPU ($1), long on one dear GPU ($4): $5 < $8 for dear alone.
    result = melange(demand, [CHEAP, DEAR])
    assert result.optimal and (result.devices, result.usd_per_hour) == ({"cheap": 1, "dear": 1}, 5.0)


def test_melange_slices_a_bucket_across_types():
    # 15 req/s of short requests: one cheap GPU takes 10 (8 slices of 1.875 -> 5 slices = 9.375 req/s),
    # the rest would need a second GPU either way; two cheap GPUs ($2) beat one dear ($4).
    result = melange({SMALL: 15.0}, [CHEAP, DEAR])
    assert (result.devices, result.usd_per_hour) == ({"cheap": 2}, 2.0)


def test_an_unservable_bucket_is_a_clear_error():
    with pytest.raises(ValueError, match="bucket"):
        melange({(1, 1): 1.0}, [CHEAP])
