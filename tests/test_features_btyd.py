"""BG/NBD features: fitted per as_of on that date's buyers only, NaN where undefined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.bgnbd import BetaGeoModel, rfm_from_features
from pipeline.features import NAN_WHEN_UNDEFINED, with_bgnbd
from pipeline.features.btyd import BGNBD_FEATURES, NO_PURCHASE, P_ALIVE

pytestmark = pytest.mark.code


def purchase_rows(as_of: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` buyers at ``as_of`` with plausible RFM, plus one customer without a purchase."""
    rng = np.random.default_rng(seed)
    first = rng.integers(30, 400, n).astype(float)
    repeat = rng.integers(0, 6, n)
    last = np.where(repeat > 0, rng.uniform(0, first - 1), first)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)] + ["never"],
            "as_of": pd.Timestamp(as_of),
            "repeat_purchases_lifetime": [*repeat, 0],
            "days_since_first_purchase": [*first, np.nan],
            "days_since_last_purchase": [*last, np.nan],
        }
    )
    return frame


def test_each_as_of_gets_its_own_fit_on_its_buyers() -> None:
    a, b = purchase_rows("2025-01-01", 300, 1), purchase_rows("2025-02-01", 300, 2)
    out = with_bgnbd(pd.concat([a, b], ignore_index=True), horizon_days=90)
    for part in (a, b):
        rfm = rfm_from_features(part.iloc[:-1])
        model = BetaGeoModel().fit(*rfm)
        got = out[out["as_of"] == part["as_of"].iloc[0]]
        np.testing.assert_allclose(got[NO_PURCHASE].iloc[:-1], model.prob_no_purchase(90.0, *rfm))
        np.testing.assert_allclose(got[P_ALIVE].iloc[:-1], model.prob_alive(*rfm))
        assert got[list(BGNBD_FEATURES)].iloc[-1].isna().all()  # no purchase: undefined


def test_a_date_with_too_few_buyers_and_a_log_without_purchases_give_nan() -> None:
    few = with_bgnbd(purchase_rows("2025-01-01", 5, 3), horizon_days=90)
    assert few[list(BGNBD_FEATURES)].isna().all().all()
    saas = pd.DataFrame({"customer_id": ["a"], "as_of": [pd.Timestamp("2025-01-01")]})
    out = with_bgnbd(saas, horizon_days=90)
    assert out[list(BGNBD_FEATURES)].isna().all().all()
    assert set(BGNBD_FEATURES) <= set(NAN_WHEN_UNDEFINED)
