"""The simulator's hosts prove at their real speed: honest ones pass, each cheater fails for its own reason.

Every host proves at once in a module fixture, in real time (the emulated
speeds are sleeps: an honest GPU takes ~2.5 s, a T4 claiming an RTX 4090
~6.5 s), and each test judges what one host committed with
fleetscope.proof.judge, exactly as the collector does.
"""

from __future__ import annotations

import threading
import time

import pytest

from exporters.prover import SIM_EFFICIENCY, SimProver, Task
from exporters.sim import PROOF_PROFILES, HostSpec, SimFleet
from fleetscope import gpu_models, proof

NODE_ID = 9
SCALE = 1e-6
A100 = "NVIDIA A100-SXM4-80GB"
RTX4090 = "NVIDIA GeForce RTX 4090"
HOSTS = [
    HostSpec("honest", "healthy", n_gpus=2, model=RTX4090),
    HostSpec("garbage", "proof_garbage", n_gpus=1, model=RTX4090),
    HostSpec("slow", "proof_slow", n_gpus=1, model=RTX4090),
    HostSpec("many", "proof_one_for_many", n_gpus=3, model=RTX4090),
]


def tasks_of(fleet: SimFleet, host: str) -> list[Task]:
    """The challenge a collector would send the host: one task per GPU it reports, sized for its claim."""
    out = []
    for identity, _ in fleet.reading(host, time.time()).gpus:
        row = gpu_models.lookup(identity.model_name)
        out.append(Task.from_dict({"gpu_uuid": identity.uuid, "model": row.model,
                                   **proof.size_for(row, scale=SCALE).as_dict()}))
    return out


@pytest.fixture(scope="module")
def proved():
    """{host: [(verdict, seconds), ...] in commit order}, every host proving at the same time."""
    fleet = SimFleet(5, HOSTS)
    seed = proof.new_seed()
    results: dict[str, list[tuple[proof.Verdict, float]]] = {}

    def host(spec: HostSpec) -> None:
        prover = fleet.prover(spec.host_id)
        started = time.monotonic()
        out = results.setdefault(spec.host_id, [])

        def on_commit(committed) -> None:
            seconds = time.monotonic() - started
            task = committed.task
            rows, cols = proof.choose_entries(task.n)
            openings = prover.open(committed, rows, cols)
            verdict = proof.judge(proof.keys(seed, NODE_ID, task.gpu_uuid), task.size, root=committed.root,
                                  rows=rows, cols=cols, openings=openings, seconds=seconds,
                                  deadline=proof.deadline_s(task.size, 0.0))
            out.append((verdict, seconds))

        prover.prove_all(seed, NODE_ID, tasks_of(fleet, spec.host_id), on_commit)

    threads = [threading.Thread(target=host, args=(spec,)) for spec in HOSTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_an_honest_host_passes_at_its_models_speed(proved):
    assert [v.verdict for v, _ in proved["honest"]] == ["passed", "passed"]
    for verdict, seconds in proved["honest"]:
        # SIM_EFFICIENCY (0.9) of the datasheet peak: about 2.44 s / 0.9 at this scale, inside the budget.
        assert 2.5 < seconds < 3.6
        assert verdict.tflops == pytest.approx(165.2 * SCALE * SIM_EFFICIENCY, rel=0.15)


def test_a_garbage_host_is_on_time_but_wrong(proved):
    [(verdict, seconds)] = proved["garbage"]
    assert verdict.verdict == "failed"
    assert verdict.reason.startswith("wrong result")
    assert seconds < 4.0


def test_a_t4_claiming_an_rtx_4090_is_late(proved):
    [(verdict, seconds)] = proved["slow"]
    assert verdict.verdict == "failed"
    assert verdict.reason.startswith("late")
    # 165.2 / 65 TFLOPS: about 2.5 x the honest time (the work is 2.44 s at the peak at this scale: n and k
    # round up to whole chunks).
    expected = proof.size_for(gpu_models.lookup(RTX4090), scale=SCALE).expected_s
    assert seconds == pytest.approx(expected * 165.2 / 65 / SIM_EFFICIENCY, rel=0.1)


def test_one_gpu_answering_for_three_is_late_for_the_later_ones(proved):
    verdicts = [v for v, _ in proved["many"]]
    assert [v.verdict for v in verdicts] == ["passed", "failed", "failed"]
    assert all(v.reason.startswith("late") for v in verdicts[1:])


def test_a_spec_mismatch_host_would_be_late_for_the_model_it_claims():
    # An RTX 4090 claiming an H100 takes 989 / 165.2 times the H100's time
    # (~15 s): checked on the emulated time, not waited for.
    fleet = SimFleet(5, [HostSpec("mismatch", "spec_mismatch", n_gpus=1)])
    [task] = tasks_of(fleet, "mismatch")
    assert fleet.proof_hardware("mismatch") == RTX4090
    assert fleet.prover("mismatch").emulated_s(task) > proof.deadline_s(task.size, proof.MAX_RTT_S)


def test_every_proof_profile_is_a_known_profile_with_a_prover():
    fleet = SimFleet(1, [HostSpec(p, p, n_gpus=1) for p in PROOF_PROFILES])
    provers = {p: fleet.prover(p) for p in PROOF_PROFILES}
    assert all(isinstance(p, SimProver) for p in provers.values())
    assert provers["proof_silent"].silent and not provers["proof_garbage"].silent
    assert fleet.proof_hardware("proof_slow") == "Tesla T4"
    assert fleet.proof_hardware("proof_garbage") == A100
    # Their telemetry is a healthy host's: the same families as one.
    healthy = SimFleet(1, [HostSpec("h", "healthy", n_gpus=1)])
    assert [f.name for f in fleet.families("proof_slow", 0.0)] == [f.name for f in healthy.families("h", 0.0)]
