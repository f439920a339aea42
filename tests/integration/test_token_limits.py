"""Token counting under load: the --max-count-bytes cap (413 in each API's shape), and the tokens
process (a child of the control process) that keeps the admin port answering, stays under its RSS
bound, and comes back on its own when killed. Counts of long texts in slices: tests/unit/test_token_slices.py."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelyard.core.tokenizer import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from modelyard.config.token_process import RECYCLE_RSS_ENV, TITLE
from modelyard.config.token_service import RECYCLE_RSS
from modelyard.core.settings import DEFAULT_MAX_COUNT_BYTES
from tests.conftest import Gateway
from tests.integration.helpers import children, running, title
from tests.support import HealthPoller, free_port, realistic_text, wait_for

CAP = DEFAULT_MAX_COUNT_BYTES
CONTROL_RSS_BOUND = 256 << 20  # README, "Limits and hardening": the control process after counting load
COUNT_PATHS = ("/v1/messages/count_tokens", "/anthropic/v1/messages/count_tokens")


def exact_body(path: str, text: str, size: int) -> bytes:
    """A request body for `path` counting `text`, padded with ASCII to exactly `size` bytes."""
    def body(t: str) -> bytes:
        if path == "/tokenize":
            return json.dumps({"prompt": t}).encode()
        return json.dumps({"model": "m", "messages": [{"role": "user", "content": t}]}).encode()
    short = body(text)
    while len(short) > size:  # escapes (newlines, quotes) make the JSON longer than the text
        text = text[:len(text) - (len(short) - size)]
        short = body(text)
    data = body(text + "a" * (size - len(short)))
    assert len(data) == size
    return data


def vm(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak) of `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def titled(pids: list[int], name: str) -> list[int]:
    return [pid for pid in pids if title(pid) == name and running(pid)]


def control_and_tokens(gw: Gateway) -> tuple[int, int | None]:
    control = titled(children(gw.proc.pid), "modelyard control")
    assert len(control) == 1, control
    tokens = titled(children(control[0]), TITLE)
    assert len(tokens) <= 1, tokens
    return control[0], tokens[0] if tokens else None


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    # A default backend nobody listens on: /tokenize is tried there first, then counted here.
    g = Gateway("--backend", f"http://127.0.0.1:{free_port()}/v1")
    yield g
    assert g.stop() == 0, g.proc.output()


# --- the cap -----------------------------------------------------------------------------------


def post_early(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """POST whose body is sent only if no answer comes to the head alone: a gateway that refuses a body
    by its content-length answers (and closes) before reading it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(body)))
        conn.endheaders()
        assert conn.sock is not None
        if not select.select([conn.sock], [], [], 2.0)[0]:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_one_byte_over_the_cap_is_413_in_each_apis_shape(gw: Gateway) -> None:
    text = realistic_text(CAP - 200)
    status, data = post_early(gw.port, "/tokenize", exact_body("/tokenize", text, CAP + 1))
    assert status == 413, data
    error = json.loads(data)["error"]
    assert error["code"] == "request_too_large" and str(CAP) in error["message"], error
    for path in COUNT_PATHS:
        status, data = post_early(gw.port, path, exact_body(path, text, CAP + 1))
        assert status == 413, data
        answer = json.loads(data)
        assert answer["type"] == "error" and answer["error"]["type"] == "request_too_large", answer


# --- load, memory and the admin port -----------------------------------------------------------


def test_ten_maximum_size_counts_leave_the_control_process_small(gw: Gateway) -> None:
    text = realistic_text(CAP - 200)
    requests = [(path, exact_body(path, text, CAP)) for path in ("/tokenize", *COUNT_PATHS) * 4][:10]
    poller = HealthPoller(gw.admin_port)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda r: gw.post(r[0], raw=r[1], timeout=120), requests))
    finally:
        poller.close()
    assert [a[0] for a in answers] == [200] * len(requests), [a[2][:200] for a in answers if a[0] != 200]
    counts = {json.loads(a[2])["count"] for (path, _), a in zip(requests, answers) if path == "/tokenize"}
    inputs = {json.loads(a[2])["input_tokens"] for (path, _), a in zip(requests, answers) if path != "/tokenize"}
    assert len(counts) == 1 and len(inputs) == 1, (counts, inputs)
    count = counts.pop()
    assert CAP / 8 < count < CAP / 2, count  # English and code: about 3-5 bytes a token
    # The same text framed as one message, padded with some 50 "a"s less (its JSON is longer): a few tokens less.
    assert 0 <= count + MESSAGE_OVERHEAD + REPLY_OVERHEAD - inputs.pop() < 32
    assert not poller.failures and poller.answers > 0, poller.failures

    control, tokens = control_and_tokens(gw)
    assert tokens is not None
    rss = {name: (vm(pid, "VmRSS"), vm(pid, "VmHWM")) for name, pid in (("control", control), ("tokens", tokens))}
    print("after 10 x %d B counted, RSS now / peak: %s" % (CAP, ", ".join(
        f"{name} {now >> 20} / {peak >> 20} MiB" for name, (now, peak) in rss.items())))
    assert max(rss["control"]) < CONTROL_RSS_BOUND, rss
    assert max(rss["tokens"]) < RECYCLE_RSS, rss  # the peak too: the load did not need a recycle


def test_a_killed_tokens_process_comes_back_without_500s(gw: Gateway) -> None:
    text = realistic_text(1 << 20)
    requests = [(path, exact_body(path, text, (1 << 20) + 1000)) for path in ("/tokenize", *COUNT_PATHS) * 2]
    old = wait_for(lambda: control_and_tokens(gw)[1], timeout=15)
    assert old is not None
    poller = HealthPoller(gw.admin_port)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            running = [pool.submit(gw.post, path, raw=body, timeout=120) for path, body in requests]
            time.sleep(0.5)
            assert not all(f.done() for f in running)  # the kill comes mid-load
            os.kill(old, signal.SIGKILL)
            answers = [f.result() for f in running]
    finally:
        poller.close()
    assert not poller.failures and poller.answers > 0, poller.failures
    for status, _, data in answers:  # answered, or at most a clean 503 for a call the kill cut short
        assert status == 200 or (status == 503 and b"tokenizer_unavailable" in data), (status, data[:300])
    new = wait_for(lambda: control_and_tokens(gw)[1] not in (None, old), timeout=15)
    assert new, gw.proc.output()[-3000:]
    status, _, data = gw.post("/tokenize", {"prompt": "hello world"}, timeout=60)
    assert status == 200 and json.loads(data)["count"] == 2, data
    assert "tokens process" in gw.proc.output() and "restarting it" in gw.proc.output()


def test_the_tokens_process_recycles_past_its_rss_bound() -> None:
    g = Gateway("--backend", f"http://127.0.0.1:{free_port()}/v1", env={RECYCLE_RSS_ENV: "1"})
    try:
        pids = set()
        for _ in range(3):  # every call passes a 1-byte bound: each is answered, then the process is replaced
            status, _, data = g.post("/v1/messages/count_tokens",
                                     {"model": "m", "messages": [{"role": "user", "content": "hello"}]}, timeout=60)
            assert status == 200 and json.loads(data)["input_tokens"] == 9, data
            pids.add(wait_for(lambda: control_and_tokens(g)[1], timeout=15))
        assert len(pids) >= 2, pids
        assert "recycled itself" in g.proc.output()
    finally:
        assert g.stop() == 0, g.proc.output()


def test_the_tokens_process_dies_with_the_control_process(gw: Gateway) -> None:
    tokens = wait_for(lambda: control_and_tokens(gw)[1], timeout=15)  # titled once its imports are done
    assert tokens is not None
    control = control_and_tokens(gw)[0]
    os.kill(control, signal.SIGKILL)  # no chance to stop its child: PDEATHSIG does
    assert wait_for(lambda: not titled([tokens], TITLE), timeout=10), "the tokens process outlived its parent"
    # The supervisor starts a new control process, which starts a new tokens process on a new socket.
    assert wait_for(lambda: titled(children(gw.proc.pid), "modelyard control") not in ([], [control]), timeout=15)
    hello = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    # Until the new control process has compiled the config and bound the socket, counting answers 503.
    answered = wait_for(lambda: (a := gw.post("/v1/messages/count_tokens", hello, timeout=60))[0] != 503 and a,
                        timeout=15, interval=0.2)
    assert answered and answered[0] == 200 and json.loads(answered[2])["input_tokens"] == 9, answered
