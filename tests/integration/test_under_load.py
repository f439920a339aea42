"""Disruptions under continuous load: config reloads, SIGTERM, and a worker killed with SIGKILL.

Each scenario starts real processes (mock backends and `modelyard run` with two
workers) and runs a bounded load: 8 client threads (http.client), a few hundred
requests in all, while the gateway is disrupted. Every request is accounted
for: each one carries an `x-load-id` header, which the gateway passes upstream,
so the mock's /mock/requests tells which requests reached a backend, and each
ends as exactly one `Outcome` (a complete, valid 200; a refused connection; or
what else went wrong). Nothing here measures speed: every wait is for a state,
with generous timeouts, so a slow 2-core machine only makes the tests longer.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.support import wait_for
from tests.integration.helpers import (
    established_per_process,
    exited,
    listening_workers,
    refused,
    replace_atomically,
    workers,
)

THREADS = 8
STATE_WAIT = 20.0  # seconds: the most any wait for a state may take (a reload, a respawn, a drain)
REQUEST_TIMEOUT = 30.0  # seconds: per request, far above anything the mocks take
STREAM_TOKENS = 20
GRACE = 10  # seconds: --grace for the SIGTERM scenario


# --- the load ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Outcome:
    """One request of the load, from the client's side."""

    rid: int  # the x-load-id header
    stream: bool
    started: float  # time.monotonic() before connecting or sending
    ended: float = 0.0
    status: int | None = None  # None: no response head came back
    served_by: str | None = None  # the x-mock-name response header: which mock answered
    ok: bool = False  # status 200 and a complete, valid body
    refused: bool = False  # the connection was refused: nothing listened on the port
    error: str = ""

    @property
    def head(self) -> bool:
        return self.status is not None

    @property
    def connection_error(self) -> bool:
        """Failed at the connection level: no response head, or the body broken off."""
        return not self.ok and (not self.head or self.error.startswith("body broken off"))


def check_chat(data: bytes, model: str) -> str:
    """What is wrong with a non-streaming chat completion body ("" when nothing)."""
    try:
        doc = json.loads(data)
        choice = doc["choices"][0]
        content = choice["message"]["content"]
        if doc["object"] != "chat.completion" or doc["model"] != model:
            return f"unexpected object or model: {data[:300]!r}"
        if not (isinstance(content, str) and content) or choice["finish_reason"] != "stop":
            return f"no content or not finished: {data[:300]!r}"
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"invalid body ({e!r}): {data[:300]!r}"
    return ""


def check_stream(data: bytes, tokens: int) -> str:
    """What is wrong with a chat completion event stream ("" when nothing)."""
    events = [e for e in data.decode(errors="replace").split("\n\n") if e.strip()]
    if not events or events[-1] != "data: [DONE]":
        return f"stream does not end with data: [DONE]: {events[-3:]!r}"
    try:
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        if any("error" in c for c in chunks):
            return f"error event in stream: {events[-3:]!r}"
        content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"invalid stream ({e!r}): {events[-3:]!r}"
    if len([t for t in content if t]) != tokens or finish[-1:] != ["stop"]:
        return f"incomplete stream ({len([t for t in content if t])} of {tokens} tokens): {events[-3:]!r}"
    return ""


class Load:
    """THREADS client threads sending chat completions for `model` until stopped or `limit` requests in all.

    keep_alive(t): whether thread t keeps its connection between requests (else one per request).
    stream(t): whether thread t sends streaming requests (STREAM_TOKENS tokens each).
    stop_after_refusals: a thread stops after this many refused connections in a row.
    after_failure: an event a thread waits for after a failed request, before it connects again.
    """

    def __init__(self, port: int, model: str, *, limit: int, keep_alive: Callable[[int], bool] = lambda t: False,
                 stream: Callable[[int], bool] = lambda t: False, stop_after_refusals: int | None = None,
                 after_failure: threading.Event | None = None):
        self.port = port
        self.model = model
        self.limit = limit
        self.keep_alive = keep_alive
        self.stream = stream
        self.stop_after_refusals = stop_after_refusals
        self.after_failure = after_failure
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.issued = 0
        self.outcomes: list[Outcome] = []  # finished requests, in the order they ended
        self.open: dict[int, Outcome] = {}  # requests under way
        self.threads = [threading.Thread(target=self._run, args=(t,), name=f"load-{t}", daemon=True)
                        for t in range(THREADS)]

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop.set()
        if self.after_failure is not None:
            self.after_failure.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT + 10)
        if exc_type is None:  # else the test's own failure says more
            assert self.finished(), "a load thread did not finish"

    # -- observing it

    def finished(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def in_flight(self) -> list[Outcome]:
        with self.lock:
            return list(self.open.values())

    def done(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def wait_done(self, n: int, since: float = 0.0) -> bool:
        """Wait until `n` requests started after `since` (time.monotonic()) have ended."""
        return bool(wait_for(lambda: sum(o.started > since for o in self.done()) >= n, timeout=STATE_WAIT))

    def accounted(self) -> bool:
        """Whether every request issued ended as exactly one outcome."""
        with self.lock:
            return not self.open and sorted(o.rid for o in self.outcomes) == list(range(1, self.issued + 1))

    def summary(self) -> dict[str, int]:
        done = self.done()
        return {
            "issued": self.issued, "ok": sum(o.ok for o in done), "refused": sum(o.refused for o in done),
            "no_head": sum(not o.head and not o.refused for o in done),
            "head_not_ok": sum(o.head and not o.ok for o in done),
        }

    # -- the threads

    def _run(self, t: int) -> None:
        conn: http.client.HTTPConnection | None = None
        refusals = 0
        try:
            while not self.stop.is_set():
                with self.lock:
                    if self.issued >= self.limit:
                        return
                    self.issued += 1
                    out = Outcome(self.issued, self.stream(t), time.monotonic())
                    self.open[out.rid] = out
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
                self._exchange(conn, out)
                out.ended = time.monotonic()
                with self.lock:
                    del self.open[out.rid]
                    self.outcomes.append(out)
                if not (out.ok and self.keep_alive(t)):
                    conn.close()
                    conn = None
                if out.refused:
                    refusals += 1
                    if self.stop_after_refusals is not None and refusals >= self.stop_after_refusals:
                        return
                    time.sleep(0.05)
                    continue
                refusals = 0
                if not out.ok and self.after_failure is not None:
                    self.after_failure.wait(STATE_WAIT + 10)
        finally:
            if conn is not None:
                conn.close()

    def _exchange(self, conn: http.client.HTTPConnection, out: Outcome) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"content-type": "application/json", "x-load-id": str(out.rid)}
        if out.stream:
            body["stream"] = True
            headers["x-mock-tokens"] = str(STREAM_TOKENS)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
            resp = conn.getresponse()
        except ConnectionRefusedError as e:
            out.refused, out.error = True, repr(e)
            return
        except (OSError, http.client.HTTPException) as e:
            out.error = f"no response head: {e!r}"
            return
        out.status = resp.status
        out.served_by = resp.getheader("x-mock-name")
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            out.error = f"body broken off: {e!r}"
            return
        if resp.status != 200:
            out.error = f"status {resp.status}: {data[:300]!r}"
        else:
            out.error = check_stream(data, STREAM_TOKENS) if out.stream else check_chat(data, self.model)
        out.ok = not out.error


def reached(mock: Mock) -> set[int]:
    """The x-load-id of every chat request the mock received."""
    return {int(r["headers"]["x-load-id"]) for r in mock.chat_requests() if "x-load-id" in r["headers"]}


def describe(outcomes: list[Outcome], n: int = 5) -> str:
    return "\n".join(f"#{o.rid} stream={o.stream} status={o.status} {o.error}" for o in outcomes[:n])


def config_for(mock: Mock, *models: str) -> str:
    return openai_backend("mock", "127.0.0.1", mock.port) + route("main", *models)


# --- 1. reloads under continuous load ---------------------------------------------------------------


def reload_to(gw: Gateway, conf: Path, text: str, models: set[str], endpoint: str) -> tuple[float, float]:
    """Replace the watched file with `text`; wait until every worker serves the new table.

    Returns when the file was written and when every worker had the new table (time.monotonic()).
    """
    generation = gw.config()["generation"]
    written = time.monotonic()
    replace_atomically(conf, text)

    def served() -> bool:
        v = gw.config()
        return (v["generation"] > generation and v["errors"] == [] and set(v["models"]) == models
                and [b["endpoints"] for b in v["backends"]] == [[endpoint]]
                and len(v["workers"]) == gw.workers and all(w["generation"] == v["generation"] for w in v["workers"]))

    assert wait_for(served, timeout=STATE_WAIT), gw.config()
    return written, time.monotonic()


def test_reload_under_continuous_load(tmp_path: Path, start_mock, start_gateway) -> None:
    mock1 = start_mock("load-mock-1", "--latency-ms", "30")
    mock2 = start_mock("load-mock-2", "--latency-ms", "30")
    conf = tmp_path / "gateway.yaml"
    write_config(conf, config_for(mock1, "alpha"))
    gw = start_gateway("--config", str(conf))
    assert wait_for(gw.in_sync, timeout=STATE_WAIT), gw.config()

    # Half the threads keep their connection across the reloads, half open one per request.
    with Load(gw.port, "alpha", limit=3000, keep_alive=lambda t: t % 2 == 0) as load:
        assert load.wait_done(THREADS * 2)
        windows = []
        # A rule for a second model comes, then goes; model alpha is valid throughout.
        windows.append(reload_to(gw, conf, config_for(mock1, "alpha", "beta"), {"alpha", "beta"}, mock1.address))
        status, hdrs, _ = gw.chat("beta")
        assert status == 200 and hdrs["x-mock-name"] == "load-mock-1"
        assert load.wait_done(THREADS * 2, since=windows[-1][1])
        windows.append(reload_to(gw, conf, config_for(mock1, "alpha"), {"alpha"}, mock1.address))
        assert gw.chat("beta")[0] == 404
        assert load.wait_done(THREADS * 2, since=windows[-1][1])
        # The Backend's address moves from mock1 to mock2, which serves the same model.
        assert reached(mock2) == set()
        windows.append(reload_to(gw, conf, config_for(mock2, "alpha"), {"alpha"}, mock2.address))
        swapped_at, swapped = windows[-1]
        assert load.wait_done(THREADS * 5, since=swapped)
    outcomes = load.done()
    assert load.accounted(), load.summary()

    failed = [o for o in outcomes if not o.ok]
    print(f"reload: {load.summary()}")
    assert not failed, f"{len(failed)} of {len(outcomes)} requests for alpha failed:\n{describe(failed)}"
    # The load overlapped every reload: requests were under way between the write and its adoption.
    for written, adopted in windows:
        assert any(o.started < adopted and o.ended > written for o in outcomes), (written, adopted)

    before = [o for o in outcomes if o.ended < swapped_at]
    after = [o for o in outcomes if o.started > swapped]
    assert before and after
    assert {o.served_by for o in before} == {"load-mock-1"}
    assert {o.served_by for o in after} == {"load-mock-2"}, describe([o for o in after if o.served_by != "load-mock-2"])
    # And from the mocks' side: every request after the swap reached mock2 and none of them mock1.
    at_mock1, at_mock2 = reached(mock1), reached(mock2)
    assert {o.rid for o in after} <= at_mock2
    assert not {o.rid for o in after} & at_mock1
    assert not {o.rid for o in before} & at_mock2
    assert gw.proc.alive()


# --- 2. SIGTERM under load ----------------------------------------------------------------------------


def test_sigterm_under_load_drains_every_accepted_request(tmp_path: Path, start_mock, start_gateway) -> None:
    # Non-streaming answers take 300 ms; a stream of STREAM_TOKENS tokens 100 ms apart about 2 s.
    mock = start_mock("drain-mock", "--latency-ms", "300", "--itl-ms", "100")
    conf = write_config(tmp_path / "gateway.yaml", config_for(mock, "alpha"))
    gw = start_gateway("--config", str(conf), "--grace", str(GRACE))
    assert wait_for(lambda: len(listening_workers(gw)) == 2, timeout=STATE_WAIT), workers(gw)

    # Odd threads stream, even ones do not; each opens a connection per request, and stops
    # once the gateway refuses three connections in a row.
    with Load(gw.port, "alpha", limit=1000, stream=lambda t: t % 2 == 1, stop_after_refusals=3) as load:
        def under_way() -> tuple[list[Outcome], list[Outcome]] | None:
            # Streams that have their response head, and non-streaming requests the mock holds.
            open_ = load.in_flight()
            streams = [o for o in open_ if o.stream and o.head]
            at_mock = reached(mock)
            waiting = [o for o in open_ if not o.stream and o.rid in at_mock]
            return (streams, waiting) if len(streams) >= 2 and len(waiting) >= 2 else None

        assert load.wait_done(THREADS * 2), load.summary()  # a while of steady load first
        flight = wait_for(under_way, timeout=STATE_WAIT)
        assert flight, load.summary()
        os.kill(gw.proc.pid, signal.SIGTERM)
        terminated = time.monotonic()
        try:
            code: int | None = gw.proc.popen.wait(GRACE + 10)  # the grace, and time to tidy up
        except subprocess.TimeoutExpired:
            code = None
        exited_after = time.monotonic() - terminated
        assert wait_for(load.finished, timeout=STATE_WAIT), load.summary()
    output = gw.proc.output()
    assert code == 0, f"exit code {code} {exited_after:.1f}s after SIGTERM:\n{output}"
    assert "Traceback" not in output, output
    assert "refused to gracefully stop" not in output and "did not stop within" not in output, output
    assert load.accounted(), load.summary()
    outcomes = load.done()

    # Accepted: it got a response head, or the gateway passed it to the mock. Each must complete.
    at_mock = reached(mock)
    accepted = [o for o in outcomes if o.head or o.rid in at_mock]
    broken = [o for o in accepted if not o.ok]
    assert not broken, f"{len(broken)} accepted requests did not complete:\n{describe(broken)}\n{load.summary()}"
    streams, waiting = flight
    assert all(o.ok for o in streams + waiting)
    drained = [o for o in accepted if o.started < terminated < o.ended]
    assert sum(o.stream for o in drained) >= 2 and sum(not o.stream for o in drained) >= 2, describe(drained)
    # The rest never got in: refused, or reset in an accept queue before any response. Some
    # connections made after the SIGTERM were refused, and after the exit nothing listens.
    accepted_ids = {o.rid for o in accepted}
    rest = [o for o in outcomes if o.rid not in accepted_ids]
    print(f"sigterm: {len(accepted)} accepted ({len(drained)} under way at SIGTERM), {len(rest)} not accepted "
          f"({sum(o.refused for o in rest)} refused, {sum(o.started < terminated for o in rest)} of them sent "
          f"before SIGTERM); exit {exited_after:.1f}s after SIGTERM; {load.summary()}")
    assert all(o.connection_error for o in rest), describe(rest)
    assert any(o.refused for o in rest), load.summary()
    assert all(o.started > terminated for o in outcomes if o.refused), describe([o for o in outcomes if o.refused])
    assert refused(gw.port), "the data-plane port accepts connections after exit"
    assert refused(gw.admin_port), "the admin port accepts connections after exit"


# --- 3. a worker killed with SIGKILL under load -------------------------------------------------------


def test_worker_killed_under_load_is_replaced(tmp_path: Path, start_mock, start_gateway) -> None:
    mock = start_mock("kill-mock", "--latency-ms", "30")
    conf = write_config(tmp_path / "gateway.yaml", config_for(mock, "alpha"))
    gw = start_gateway("--config", str(conf))
    original = wait_for(lambda: len(w := listening_workers(gw)) == 2 and w, timeout=STATE_WAIT)
    assert original, workers(gw)
    assert wait_for(gw.in_sync, timeout=STATE_WAIT), gw.config()

    # Every thread keeps one connection, so each is held by one worker until it fails; a thread
    # whose request failed waits until the killed worker is gone before it connects again.
    resume = threading.Event()
    with Load(gw.port, "alpha", limit=3000, keep_alive=lambda t: True, after_failure=resume) as load:
        assert load.wait_done(THREADS * 3)
        pids = [w["pid"] for w in gw.config()["workers"]]
        assert set(pids) == set(original), (pids, original)
        held = established_per_process(gw.port, pids)
        victim = max(pids, key=lambda p: held[p])
        assert held[victim] >= 1, held
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: exited(victim), timeout=STATE_WAIT), f"worker {victim} did not exit"
        resumed = time.monotonic()
        resume.set()

        def replaced() -> set[int] | None:
            v = gw.config()
            now = {w["pid"] for w in v["workers"]}
            in_sync = all(w["generation"] == v["generation"] for w in v["workers"])
            return now if len(now) == 2 and victim not in now and in_sync else None

        now = wait_for(replaced, timeout=STATE_WAIT)
        assert now, (gw.config(), gw.proc.output())
        assert wait_for(lambda: set(listening_workers(gw)) == now, timeout=STATE_WAIT), (workers(gw), now)
        # The gateway went on serving, on the connections it kept and on new ones.
        assert load.wait_done(THREADS * 5, since=resumed)
        for _ in range(10):
            status, _, body = gw.chat("alpha")
            assert status == 200, body
    outcomes = load.done()
    assert load.accounted(), load.summary()

    failed = [o for o in outcomes if not o.ok]
    print(f"sigkill: {len(failed)} failed of {len(outcomes)}, {held[victim]} connections on the killed worker; "
          f"{load.summary()}")
    assert not [o for o in failed if o.ended < killed], describe(failed)
    # Only requests on the killed worker's connections may fail, each at the connection level.
    assert all(o.connection_error for o in failed), describe(failed)
    assert len(failed) <= held[victim], f"{len(failed)} failed, {held[victim]} on the killed worker:\n{describe(failed)}"
    assert all(o.started < resumed for o in failed), describe(failed)
    after = [o for o in outcomes if o.started > resumed]
    assert len(after) >= THREADS * 5 and all(o.ok for o in after)
    assert gw.proc.alive()
    code = gw.stop()
    output = gw.proc.output()
    assert code == 0, output
    assert "Traceback" not in output, output
