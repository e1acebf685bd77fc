"""Shared test settings: tiny shapes, CPU, deterministic."""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    # Two cores on CI; more threads than cores only adds contention for tiny shapes.
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
