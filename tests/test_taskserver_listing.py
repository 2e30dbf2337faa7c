"""Listings a poller can afford: ``?limit&offset&order`` pages and ``X-Total-Count``; the
whole list without parameters, as the course's scripts expect. On both storage backends."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from storage_backends import BACKENDS, storage_for, taskserver_on
from support import ServiceProcess

TITLES = [f"t{n}" for n in range(7)]


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    storage = storage_for(request, tmp_path_factory.mktemp("listing"))
    process = taskserver_on("server1", storage).start()
    with httpx.Client(base_url=process.url) as http:
        for title in TITLES:
            assert http.post("/tareas", json={"title": title}).status_code == 201
    yield process
    process.close()


@pytest.mark.parametrize("path", ["/tareas", "/api/tasks"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", TITLES),
        ("?limit=3", TITLES[:3]),
        ("?limit=3&offset=2", TITLES[2:5]),
        ("?offset=5", TITLES[5:]),
        ("?offset=50", []),
        ("?limit=0", []),
        ("?order=desc&limit=3", TITLES[::-1][:3]),
        ("?order=desc&limit=2&offset=1", TITLES[::-1][1:3]),
        ("?order=desc", TITLES[::-1]),
        ("?order=asc&limit=1&_=123", TITLES[:1]),  # a cache-buster is ignored
    ],
)
def test_pages_and_the_total(server: ServiceProcess, path: str, query: str, expected: list) -> None:
    response = httpx.get(server.url + path + query)
    assert response.status_code == 200
    assert [task["title"] for task in response.json()] == expected
    assert response.headers["x-total-count"] == str(len(TITLES))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?limit=-1", "'limit' must be a whole number from 0 to 10000"),
        ("?limit=10001", "from 0 to 10000, not '10001'"),
        ("?limit=abc", "not 'abc'"),
        ("?offset=1.5", "'offset' must be a whole number (0 or more)"),
        ("?offset=" + "9" * 50, "'offset' must be a whole number"),
        ("?order=newest", "'order' must be asc"),
    ],
)
def test_bad_page_parameters_get_400(server: ServiceProcess, query: str, fragment: str) -> None:
    response = httpx.get(server.url + "/tareas" + query)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
