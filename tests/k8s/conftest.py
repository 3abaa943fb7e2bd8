"""Fixtures for code that talks to Kubernetes: a running ApiServerDouble and an official client pointed at it."""

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient

from tests.k8s.apiserver_double import ApiServerDouble


@pytest.fixture
def apiserver_double() -> Iterator[ApiServerDouble]:
    """A fresh, empty API server double, serving until the test ends."""
    double = ApiServerDouble().start()
    yield double
    double.close()


@pytest.fixture
def k8s_api_client(apiserver_double: ApiServerDouble) -> Iterator[ApiClient]:
    """An official `kubernetes.client.ApiClient` authenticated to `apiserver_double`."""
    with ApiClient(apiserver_double.client_configuration()) as api_client:
        yield api_client
