"""GPU identities must be plausible (issue 15, item 6): UUID shape, sane ranges, reasons counted.

A UUID like ``GPU-0`` (accepted from 25 nodes before) refuses the push; an
identity number outside its sane range (``memory_total_bytes="-1"``) is not
stored and is counted by reason, while the GPU's telemetry is kept.
"""

from __future__ import annotations

import pytest

from collector.liveness import plausible_uuid
from tests.collector_harness import FLEET_PROM, push, register, rejects

REAL_UUID = "GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6"


@pytest.mark.parametrize("uuid", ["GPU-0", "GPU-hot", "GPU-00000000-0000-0000-0000-000000000000",
                                  "GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6-and-more", "0"])
async def test_a_push_naming_an_implausible_gpu_uuid_is_refused(client, storage, operator_token, uuid):
    _, token = await register(client, operator_token)
    body = FLEET_PROM.replace(REAL_UUID.encode(), uuid.encode())
    response = await push(client, token, body)
    assert response.status == 400
    assert (await response.json())["reason"] == "implausible_uuid"
    assert storage.committed == []
    assert await rejects(client, "implausible_uuid") == 1


@pytest.mark.parametrize("uuid", [REAL_UUID, "MIG-GPU-86e0fbc8-6b44-0e94-f849-dfeb083826c6/1/0",
                                  "MIG-86e0fbc8-6b44-0e94-f849-dfeb083826c6",
                                  "8F2E11C5-3C0B-5E4A-9E51-6A4E0A3C7D21"])  # Apple's IOPlatformUUID
def test_uuids_of_real_gpus_are_plausible(uuid):
    assert plausible_uuid(uuid)


@pytest.mark.parametrize(("label", "bad"), [("memory_total_bytes", "-1"), ("memory_total_bytes", "1"),
                                            ("memory_total_bytes", "1e30"), ("sm_count", "0"),
                                            ("sm_count", "99999"), ("max_sm_clock_mhz", "-5")])
async def test_an_implausible_identity_number_is_not_stored_and_is_counted(client, storage, operator_token,
                                                                            label, bad):
    _, token = await register(client, operator_token)
    lines = FLEET_PROM.decode().split("\n")
    info = next(i for i, line in enumerate(lines) if line.startswith("fleet_gpu_info{") and REAL_UUID in line)
    before = lines[info].split(f'{label}="', 1)[1].split('"', 1)[0]
    lines[info] = lines[info].replace(f'{label}="{before}"', f'{label}="{bad}"')
    response = await push(client, token, "\n".join(lines).encode())
    assert response.status == 204, await response.text()
    (batch,) = storage.committed
    identity = next(i for i in batch.payload.identities if i.uuid == REAL_UUID)
    assert getattr(identity, label) is None
    others = [i for i in batch.payload.identities if i.uuid != REAL_UUID]
    assert all(getattr(i, label) is not None for i in others)  # only the implausible value is dropped
    assert REAL_UUID in batch.healthy_gpus  # the GPU itself still reports
    assert await rejects(client, "implausible_field") == 1
