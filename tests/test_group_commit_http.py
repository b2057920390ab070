"""Many concurrent mutations over HTTP: group commit keeps them all, and versions tell the truth."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest

from tests.support.api import Api, error_of
from tests.support.sse import watch

pytestmark = pytest.mark.anyio

CLIENTS = 4
LANES = 10  # concurrent request chains per client
CHAIN = 5  # sequential mutations per chain: 4 x 10 x 5 = 200


async def test_concurrent_mutations_all_commit_with_truthful_versions(server, client, api):
    done: list[tuple[str, int, int]] = []  # (name, id, version) in completion order
    chains: dict[str, list[int]] = {}

    async def chain(http: httpx.AsyncClient, lane: str) -> None:
        caller = Api(http)
        versions = chains.setdefault(lane, [])
        for step in range(CHAIN):
            name = f"{lane}-{step}"
            result = await caller.mutation("items.add", {"name": name})
            done.append((name, result.value["id"], result.version))
            versions.append(result.version)

    async with watch(client, "/api/watch/items.list") as stream:
        start = (await stream.next()).json["version"]
        with anyio.fail_after(60):
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(server.client(timeout=30.0))
                    for _ in range(CLIENTS)
                ]
                async with anyio.create_task_group() as tg:
                    for c, http in enumerate(clients):
                        for lane in range(LANES):
                            tg.start_soon(chain, http, f"c{c}l{lane}")
        final_version = max(version for _, _, version in done)
        seen = []
        while not seen or seen[-1].json["version"] < final_version:
            seen.append(await stream.next())
        await stream.quiet(0.3)

    assert len(done) == CLIENTS * LANES * CHAIN
    assert len({row_id for _, row_id, _ in done}) == len(done)
    # A chain waits for each commit before its next mutation, so its versions strictly increase.
    for lane, versions in chains.items():
        assert versions == sorted(set(versions)), lane
    assert min(version for _, _, version in done) > start

    listed = await api.query("items.list")
    assert listed.version == final_version
    assert sorted((row["id"], row["name"]) for row in listed.value) == sorted(
        (row_id, name) for name, row_id, _ in done
    )
    assert (await api.query("items.count")).value == len(done)

    # Every pushed value is exactly the rows whose mutations committed at or before its version.
    versions = [event.json["version"] for event in seen]
    assert versions == sorted(set(versions))
    for event in seen:
        version = event.json["version"]
        assert event.id == str(version)
        expected = sorted((row_id, name) for name, row_id, v in done if v <= version)
        assert [(row["id"], row["name"]) for row in event.json["value"]] == expected


async def test_a_failing_mutation_rolls_back_alone(client, api):
    good = [f"good-{i}" for i in range(40)]
    refused = [f"bad-{i}" for i in range(8)]
    crashing = [f"crash-{i}" for i in range(2)]
    responses: dict[str, httpx.Response] = {}

    async def call(name: str, function: str) -> None:
        responses[name] = await client.post(
            f"/api/mutation/{function}", json={"args": {"name": name}}
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i, name in enumerate(good):
                tg.start_soon(call, name, "items.add")
                if i % 5 == 0:
                    tg.start_soon(call, refused[i // 5], "items.add_then_fail")
                if i % 20 == 0:
                    tg.start_soon(call, crashing[i // 20], "items.explode")

    for name in refused:
        error = error_of(responses[name], 400, "boom")
        assert error == {"code": "boom", "message": f"Refused {name} after inserting it."}
    for name in crashing:
        error_of(responses[name], 500, "internal_error")
    for name in good:
        assert responses[name].status_code == 200, responses[name].text

    dump = await api.query("db.dump")
    assert dump.value == {
        "items": sorted(
            ({"id": responses[n].json()["value"]["id"], "name": n} for n in good),
            key=lambda row: row["id"],
        ),
        "audit": [],
        "blobs": [],
    }
