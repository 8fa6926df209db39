"""The registered champion as an MLflow pyfunc, logged as "models from code" (no pickle).

MLflow copies this file into the model and runs it on load; ``set_model`` names the model. The
artifact ``bundle`` is the exported bundle folder (LightGBM text model, calibrator JSON, card,
manifest); ``load_context`` verifies its manifest, so an edited artifact is refused.
``predict(features)`` takes the feature frame as scoring builds it (categorical columns as
strings) and returns the calibrated churn probability per row, the same as ``churn score``.
Serving it needs this project installed (``pipeline`` importable) beside the pinned packages.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from pipeline.tracking import BUNDLE_ARTIFACT


class ChurnProbability(mlflow.pyfunc.PythonModel):
    """Calibrated P(churn within the horizon) from the verified text bundle."""

    def load_context(self, context) -> None:
        from pipeline.model import ModelBundle

        self.bundle_ = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self.bundle_.predict(pd.DataFrame(model_input))


mlflow.models.set_model(ChurnProbability())
