"""What a buy-till-you-die model says of each customer: BG/NBD fitted on the base at as_of.

Unlike the other families, these features need the whole base at one as_of (BG/NBD's four
parameters are fitted across customers), so they are added after the per-partition pass, by
``with_bgnbd`` on the stacked frame. Each as_of gets its own fit on that date's frequency,
recency and T (``pipeline.bgnbd.rfm_from_features``: events before as_of only, no label), so
the features are point-in-time like the rest. Customers without a purchase before as_of, and
dates with fewer than ``MIN_BUYERS`` buyers (a log without purchases), get NaN: the model reads
it as missing. Gradient boosting on these plus the behavioural features can then do at least as
well as BG/NBD alone, which is the baseline it has to beat on purchase logs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.bgnbd import RFM_COLUMNS, BetaGeoModel, rfm_from_features

log = logging.getLogger(__name__)

NO_PURCHASE = "bgnbd_no_purchase_probability"
"""P(no purchase in [as_of, as_of + label horizon)) under BG/NBD."""
P_ALIVE = "bgnbd_p_alive"
"""P(the customer has not dropped out by as_of) under BG/NBD."""
BGNBD_FEATURES = (NO_PURCHASE, P_ALIVE)
MIN_BUYERS = 20
"""Fewer buyers at one as_of than this and BG/NBD is not fitted (its fit refuses them too)."""


def with_bgnbd(frame: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """``frame`` plus the BG/NBD columns, fitted per as_of on its buyers (see module doc)."""
    no_purchase, alive = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    if len(frame) and "days_since_first_purchase" in frame:
        # Only the purchase columns are copied per date: the whole rows of a 1M base are GBs.
        rfm_columns = frame[[c for c in RFM_COLUMNS if c in frame]]
        for as_of, index in frame.groupby("as_of", sort=True).indices.items():
            rows = rfm_columns.iloc[index]
            buyers = rows["days_since_first_purchase"].notna().to_numpy()
            fitted = _fit(rows[buyers], as_of)
            if fitted is not None:
                model, rfm = fitted
                no_purchase[index[buyers]] = model.prob_no_purchase(float(horizon_days), *rfm)
                alive[index[buyers]] = model.prob_alive(*rfm)
    return frame.assign(**{NO_PURCHASE: no_purchase, P_ALIVE: alive})


def _fit(buyers: pd.DataFrame, as_of) -> tuple[BetaGeoModel, tuple] | None:
    """BG/NBD fitted on one date's buyers, with their RFM; None when it cannot be fitted."""
    if len(buyers) < MIN_BUYERS:
        return None
    rfm = rfm_from_features(buyers)
    try:
        return BetaGeoModel().fit(*rfm), rfm
    except ValueError as error:
        log.warning("BG/NBD features left empty at %s: %s", pd.Timestamp(as_of).date(), error)
        return None
