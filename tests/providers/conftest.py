"""Fixtures for the providers whose emails the worker fetches from the provider's API (sent mail,
metadata-only events): the relay pointed at the local stand-in of every such API (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.app import create_app
from tests.conftest import StorageStub
from tests.helpers import provider_api_env


@pytest.fixture
def api_settings(make_settings: Any, storage: StorageStub) -> Any:
    return make_settings(**provider_api_env(storage.url))


@pytest.fixture
def api_client(api_settings: Any) -> Any:
    return create_app(api_settings).test_client()


@pytest.fixture
def api_worker(api_settings: Any, start_worker: Any) -> Any:
    return start_worker(api_settings)
