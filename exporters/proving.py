"""The proof client: the exporter proves its GPUs when the collector asks (docs/proof.md).

A thread long-polls ``GET /api/v1/proof/challenge?wait=25`` with the node
token (the collector of ``--push``, the same token). On a challenge it asks
for the seed (``POST /api/v1/proof/start``), proves every challenged GPU at
once (exporters/prover.py, one thread per GPU, with the node id the
challenge names), sends each GPU's root (``POST /api/v1/proof/commit``) as
soon as it is ready, and opens the chunks of C holding the entries the
collector names in reply (``POST /api/v1/proof/open``). Every verdict is
logged and counted in ``fleet_exporter_proof_verdicts_total{verdict}``.

- 204: no work this time; poll again.
- 4xx: logged; the round (or that GPU) is given up and polling goes on; a
  refused poll (401 bad token, 404 a collector without proofs) waits
  REFUSED_WAIT_S before the next.
- 5xx, timeouts, connection errors: exponential backoff with jitter, as
  push mode (exporters/push.py).

Proving runs in its own threads; /metrics and pushing go on meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from exporters.prover import Committed, Task
from exporters.push import backoff_s, retry_after_s

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from prometheus_client.metrics_core import Metric

    from exporters.prover import Prover

log = logging.getLogger(__name__)

API = "/api/v1/proof"
# The long poll: the collector holds the request this long when it has no
# work (docs/proof.md allows 0..30 s); the HTTP timeout adds a margin.
WAIT_S = 25
POLL_MARGIN_S = 10.0
# Every other request (start, commit, open) must answer within this.
TIMEOUT_S = 10.0
# Backoff after 5xx and network errors: about a second, doubling to 5 minutes.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
# After a refused poll (4xx): a wrong token or a collector without proofs will
# not change in a second, and polling it in a loop only fills its log.
REFUSED_WAIT_S = 60.0
VERDICTS = ("passed", "failed", "error")


def proof_base(push_url: str) -> str:
    """The collector's base URL from the push URL: ``http://c:9300/x/api/v1/push`` -> ``http://c:9300/x``."""
    parts = urlparse(push_url)
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1/push"):
        path = path[: -len("/api/v1/push")]
    else:
        path = ""
    return f"{parts.scheme}://{parts.netloc}{path}"


class Answer:
    """One HTTP answer: status and JSON body (None when there was none or it was not JSON)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def reason(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("reason") or self.body.get("error") or self.body)
        return "" if self.body is None else str(self.body)


class Unreachable(Exception):
    """The collector did not answer (connection refused, reset, timeout) or answered 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProofClient:
    """Prove this host's GPUs whenever the collector at ``base_url`` challenges them, in a thread.

    ``prover``: exporters/prover.py. ``node_id``: this node's id, for the
    matrices' keys; the challenge names it, and a configured one
    (``--node-id``) overrides it.
    """

    def __init__(self, base_url: str, token: str, prover: Prover, *, node_id: int | None = None,
                 wait_s: int = WAIT_S, timeout: float = TIMEOUT_S, backoff_base: float = BACKOFF_BASE_S,
                 backoff_max: float = BACKOFF_MAX_S, refused_wait: float = REFUSED_WAIT_S,
                 rng: random.Random | None = None, name: str = "fleetscope-proof") -> None:
        if not 0 <= wait_s <= 30:
            raise ValueError(f"wait_s must be 0..30, got {wait_s}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.prover = prover
        self.node_id = node_id
        self.wait_s = wait_s
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.refused_wait = refused_wait
        self.name = name
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures_in_a_row = 0
        self._lock = threading.Lock()
        self.verdicts: Counter[str] = Counter()
        self.rounds = 0
        self.poll_errors = 0
        self.last_round: dict[str, dict[str, Any]] = {}

    # -- the metrics it adds to /metrics (a client_python collector) ----------------

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        verdicts = CounterMetricFamily("fleet_exporter_proof_verdicts",
                                       "Proofs of GPU by outcome: the collector's verdict, or error when this "
                                       "host could not prove or send.", labels=["verdict"])
        with self._lock:
            for verdict in VERDICTS:
                verdicts.add_metric([verdict], self.verdicts[verdict])
            rounds, errors = self.rounds, self.poll_errors
        yield verdicts
        yield CounterMetricFamily("fleet_exporter_proof_rounds", "Proof challenges received.", value=rounds)
        yield CounterMetricFamily("fleet_exporter_proof_poll_errors",
                                  "Challenge polls that failed (5xx, network) and were retried.", value=errors)
        yield GaugeMetricFamily("fleet_exporter_proof_waiting", "1 while polling the collector for a challenge.",
                                value=1.0 if self._thread is not None and self._thread.is_alive() else 0.0)

    # -- HTTP ------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                 timeout: float | None = None) -> Answer:
        """One request; a 4xx is an Answer, a 5xx or no answer raises Unreachable."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "User-Agent": "fleetscope-exporter",
                   "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return Answer(response.status, _json(response.read()))
        except urllib.error.HTTPError as exc:
            raw = exc.read() if exc.fp else b""
            if exc.code >= 500 or exc.code == 429:
                raise Unreachable(f"{method} {path}: HTTP {exc.code}",
                                  retry_after_s(exc.headers.get("Retry-After"))) from None
            return Answer(exc.code, _json(raw))
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout, DNS
            raise Unreachable(f"{method} {path}: {exc}") from None

    # -- one round ------------------------------------------------------------------------

    def poll(self) -> dict[str, Any] | None:
        """Wait for a challenge: its body, or None when there is none (204). Raises Unreachable."""
        answer = self._request("GET", f"{API}/challenge?wait={self.wait_s}", timeout=self.wait_s + POLL_MARGIN_S)
        if answer.status == 204:
            return None
        if answer.status == 200 and isinstance(answer.body, dict):
            return answer.body
        raise Refused(f"challenge poll: HTTP {answer.status} {answer.reason()}")

    def prove_round(self, challenge: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Answer one challenge; returns each GPU's outcome ({"verdict", "reason", ...}) by UUID."""
        round_id = challenge.get("round_id")
        with self._lock:
            self.rounds += 1
        tasks: list[Task] = []
        for entry in challenge.get("gpus") or []:
            try:
                tasks.append(Task.from_dict(entry))
            except ValueError as exc:
                log.error("proof round %s: %s", round_id, exc)
        if self.prover.silent:
            log.info("proof round %s: not answering (a silent prover)", round_id)
            return {}
        mine = [t for t in tasks if self.prover.can_prove(t)]
        for task in tasks:
            if task not in mine:
                log.error("proof round %s: %s is not a GPU this prover can reach; it will fail", round_id,
                          task.gpu_uuid)
        outcomes: dict[str, dict[str, Any]] = {}
        start = self._request("POST", f"{API}/start", {"round_id": round_id})
        if start.status != 200 or not isinstance(start.body, dict) or "seed" not in start.body:
            log.error("proof round %s: start refused: HTTP %d %s", round_id, start.status, start.reason())
            return outcomes
        node_id = self.node_id if self.node_id is not None else challenge.get("node_id")
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            log.error("proof round %s: the challenge names no node id (%r), and none was configured; "
                      "the matrices cannot be generated", round_id, node_id)
            return outcomes
        seed = str(start.body["seed"])
        started = time.monotonic()
        log.info("proof round %s: proving %d GPUs with %s (deadline %.2f s)", round_id, len(mine),
                 self.prover.backend, float(start.body.get("deadline_s") or 0.0))

        def record(uuid: str, outcome: dict[str, Any]) -> None:
            verdict = outcome.get("verdict")
            verdict = verdict if verdict in ("passed", "failed") else "error"
            outcome["verdict"] = verdict
            with self._lock:
                self.verdicts[verdict] += 1
                outcomes[uuid] = outcome
            if verdict == "passed":
                log.info("proof round %s: %s passed (%.3f s, %.1f TFLOPS)", round_id, uuid,
                         outcome.get("seconds") or 0.0, outcome.get("tflops") or 0.0)
            else:
                log.warning("proof round %s: %s %s: %s", round_id, uuid, verdict, outcome.get("reason", ""))

        def on_commit(committed: Committed) -> None:
            uuid = committed.task.gpu_uuid
            try:
                record(uuid, self._commit_and_open(round_id, committed, started))
            except Unreachable as exc:
                record(uuid, {"verdict": "error", "reason": str(exc)})
            except Exception as exc:  # noqa: BLE001 - one GPU's failure must not end the others
                log.exception("proof round %s: %s", round_id, uuid)
                record(uuid, {"verdict": "error", "reason": repr(exc)})
            finally:
                committed.release()

        def on_error(task: Task, exc: BaseException) -> None:
            log.error("proof round %s: proving %s failed: %r", round_id, task.gpu_uuid, exc)
            record(task.gpu_uuid, {"verdict": "error", "reason": f"proving failed: {exc!r}"})

        self.prover.prove_all(seed, int(node_id), mine, on_commit, on_error)
        self.last_round = outcomes
        return outcomes

    def _commit_and_open(self, round_id: Any, committed: Committed, started: float) -> dict[str, Any]:
        uuid = committed.task.gpu_uuid
        answer = self._request("POST", f"{API}/commit", {"round_id": round_id, "gpu_uuid": uuid,
                                                         "root": committed.root.hex()})
        local_s = time.monotonic() - started
        if answer.status != 200 or not isinstance(answer.body, dict):
            # 409 late is the collector's failed verdict; anything else is a refusal.
            verdict = "failed" if answer.status == 409 and "late" in answer.reason() else "error"
            return {"verdict": verdict, "reason": f"commit: HTTP {answer.status} {answer.reason()}",
                    "local_s": local_s}
        openings = self.prover.open(committed, answer.body.get("rows") or [], answer.body.get("columns") or [])
        body = {"round_id": round_id, "gpu_uuid": uuid, "openings": openings}
        answer = self._request("POST", f"{API}/open", body)
        outcome = dict(answer.body) if isinstance(answer.body, dict) else {}
        outcome.setdefault("reason", answer.reason() if answer.status != 200 else "")
        outcome["local_s"] = local_s
        if answer.status not in (200, 422):
            outcome["verdict"] = "error"
            outcome["reason"] = f"open: HTTP {answer.status} {answer.reason()}"
        return outcome

    # -- the loop -------------------------------------------------------------------------

    def _backoff(self, retry_after: float | None) -> float:
        return backoff_s(self._failures_in_a_row, base=self.backoff_base, ceiling=self.backoff_max,
                         retry_after=retry_after, rng=self._rng)

    def step(self) -> float:
        """Poll once and answer any challenge; returns how long to wait before the next poll."""
        try:
            challenge = self.poll()
        except Unreachable as exc:
            with self._lock:
                self.poll_errors += 1
            delay = self._backoff(exc.retry_after)
            self._failures_in_a_row += 1
            log.warning("proof: %s; next poll in %.1f s", exc, delay)
            return delay
        except Refused as exc:
            self._failures_in_a_row = 0
            log.error("proof: %s; next poll in %.0f s", exc, self.refused_wait)
            return self.refused_wait
        self._failures_in_a_row = 0
        if challenge is None:
            return 0.0
        try:
            self.prove_round(challenge)
        except Unreachable as exc:
            log.warning("proof round %s: %s", challenge.get("round_id"), exc)
            delay = self._backoff(exc.retry_after)
            self._failures_in_a_row += 1
            return delay
        return 0.0

    def run(self) -> None:
        """Poll and prove until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                delay = self.step()
            except Exception:  # a bug must not end proving for the exporter's life
                log.exception("proof client")
                delay = self.refused_wait
            if delay > 0:
                self._stop.wait(delay)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current poll (which may take up to ``wait_s``); join up to ``timeout``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class Refused(Exception):
    """The collector refused a poll with a 4xx."""


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")


def start_clients(base_url: str, tokens: list[str], provers: list[Prover], *,
                  node_ids: list[int | None] | None = None, wait_s: int = WAIT_S,
                  factory: Callable[..., ProofClient] = ProofClient) -> list[ProofClient]:
    """One started client per (token, prover): the simulator's hosts."""
    clients = []
    for i, (token, prover) in enumerate(zip(tokens, provers)):
        client = factory(base_url, token, prover, node_id=(node_ids or [None] * len(tokens))[i],
                         wait_s=wait_s, name=f"fleetscope-proof-{i}")
        client.start()
        clients.append(client)
    return clients
