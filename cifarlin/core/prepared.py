"""A run's data ready for the model (:class:`Prepared`): the normalised splits, and what the
solvers keep of them (the ridge solver's exact sums and eigendecomposition, a feature map). Made by
:func:`cifarlin.work.prepare.prepare_run`; trained on by :func:`cifarlin.core.train.fit` and
solved by :func:`cifarlin.core.solve.fit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cifarlin.core.config import SplitSpec
from cifarlin.core.kmeans import FeatureMap
from cifarlin.core.normalize import Normalizer
from cifarlin.core.ridge import Moments, RidgePath


@dataclass
class Prepared:
    """Normalised splits ready for the model: X (N, d) float, y (N,) int64 per split."""

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    normalizer: Normalizer
    class_names: list[str]
    dataset: Any  # the cifarlin.data.cifar.Dataset they were read from (a layer above this one)
    spec: SplitSpec
    checksums: dict[str, str]
    raw_train: np.ndarray | None = None  # (N, d) uint8: the training images, for pixel-space augmentation
    moments: Moments | None = None  # exact sums over the training images' views, for the ridge solver
    ridge_path: RidgePath | None = None  # the solver's eigendecomposition, once per Prepared
    features: FeatureMap | None = None  # X are the standardised features of this map, not pixels
