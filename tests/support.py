"""Shared literal inputs for tests (imported by test modules; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from pipeline.config import Config, EventTypes, parse_config

ALL_FAMILIES = EventTypes(
    login=["login"],
    feature_use=["feature_used"],
    complaint=["complaint"],
    support_ticket=["ticket_opened"],
    payment_failed=["payment_failed"],
    purchase=["purchase"],
    payment=["invoice_paid"],
)
"""Raw event types as a user's log names them, one per signal family."""

DEMO_EVENT_TYPES = {
    "login": ["login"],
    "feature_use": ["feature_used"],
    "complaint": ["complaint"],
    "support_ticket": ["ticket_opened"],
    "payment_failed": ["payment_failed"],
    "payment": ["invoice_paid"],
}
"""The demo simulator's event types (as in configs/demo.yaml); newsletter_opened stays unmapped."""


def demo_config(root: Path, data_dir: Path, **overrides: dict) -> Config:
    """The demo's config pointed at a small demo log in ``data_dir``, with a private MLflow
    store and outputs under ``root``; ``overrides`` update whole sections' keys."""
    raw: dict = {
        "data": {
            "events": str(data_dir / "events.parquet"),
            "customers": str(data_dir / "customers.csv"),
            "hazard": str(data_dir / "hazard.parquet"),
            "output_dir": str(root / "outputs"),
            "observed_until": "2026-11-01",
        },
        "event_types": DEMO_EVENT_TYPES,
        "train": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": str(root / "mlruns"),
        },
    }
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw)


def bench_config(tmp_path: Path, events: pd.DataFrame) -> Path:
    """A config over ``events`` and two customers c1, c2 (for the bench's code tests)."""
    from pipeline.io import write_frame

    write_frame(events, tmp_path / "events.parquet")
    write_frame(
        pd.DataFrame({"customer_id": ["c1", "c2"], "signup_at": ["2025-01-01", "2025-01-01"]}),
        tmp_path / "customers.csv",
    )
    raw = {
        "data": {
            "events": str(tmp_path / "events.parquet"),
            "customers": str(tmp_path / "customers.csv"),
            "output_dir": str(tmp_path / "outputs"),
            "observed_until": "2026-11-01",
        },
        "event_types": DEMO_EVENT_TYPES,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


STORE_CUSTOMERS = pd.DataFrame(
    {"customer_id": ["a", "b", "c"], "signup_at": ["2025-01-01", "2025-01-01", "2025-02-01"]}
)
"""The event store tests' literal customers (``test_store``, ``test_store_fsspec``)."""
STORE_EVENTS = pd.DataFrame(
    [
        ("a", "2025-03-01 10:00", "login", None),
        ("a", "2025-03-01 10:00", "login", None),  # an exact duplicate: set aside
        ("a", "2025-04-02 08:00", "feature_used", "reports"),
        ("b", "2025-05-03 09:00", "feature_used", "exports"),
        ("b", "2025-05-20 09:00", "newsletter_opened", None),  # unmapped type
        ("c", "2025-06-01 12:00", "purchase", None),
    ],
    columns=["customer_id", "occurred_at", "event_type", "feature"],
)
"""Their literal log: a duplicate, two product features, an unmapped type."""
