"""Outlet agent benchmark (issue 4): ``python -m bench.outlet_bench``.

The agent runs as a subprocess pinned to one core (``taskset -c 0``), with
``synchronous=FULL`` (every group commit is fsynced); ``wrk`` on the other core
plays 64 concurrent keep-alive terminals posting sales over loopback.

- ``ceiling_per_s``: the same HTTP stack (auth, parse, validate, answer) without
  the log (the hidden ``--no-log`` switch); ``accepted_per_s``: durable events/s,
  with the forwarder sending to a real broker; ``ratio`` = accepted / ceiling.
  Both agents run side by side and wrk loads them in turn for several rounds;
  each figure is the median over the rounds (the ratio: median of per-round ratios).
  ``accepted_forwarding_per_s``: durable events/s with the forwarder sending to
  the broker from the same core (batch20 and latency are measured that way too).
- ``batch20_per_s``: events/s posting ``{"events": [20 sales]}``.
- ``p50_ms_at_200rps`` / ``p99_ms_at_200rps``: an open-loop generator sends
  200 req/s on a fixed schedule; latency is timed from each request's
  scheduled send, so a stall is not hidden by the generator slowing down.
- ``drain_per_s``: 100k logged events forwarded to the broker after a restart
  (packed, ``forward_pack_max``), ``drain_unpacked_per_s`` the same with one
  event per record; ``peak_rss_mb``: the agent's peak RSS during the drain.

The last line printed is one JSON object, also written to bench/results/outlet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from devstack.broker import TansuBroker
from devstack.process import free_port, port_answers, spawn, stop_process, wait_until
from devstack.stack import create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "outlet.json"
STORE = "B1"
TOPIC = "retail.events.bench"

WRK_SCRIPT = r"""
local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  counter = 0
  batch = tonumber(os.getenv("BENCH_BATCH") or "1")
  prefix = os.getenv("BENCH_PREFIX") .. "-" .. tid .. "-"
  headers = {["Content-Type"] = "application/json",
             ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}
end
local function event()
  counter = counter + 1
  return '{"type":"sale","client_txn_id":"' .. prefix .. counter ..
    '","occurred_at":"2025-01-02T10:00:00Z","lines":[{"sku":"SKU-' .. (counter % 500) ..
    '","qty":1,"unit_price_cents":199}]}'
end
function request()
  local body
  if batch == 1 then
    body = event()
  else
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format("POST", "/v1/events", headers, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
"""


class Agent:
    """``python -m outlet_agent run`` pinned to core 0."""

    def __init__(self, work: Path, bootstrap: str, **env: str) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "RETAIL_STORE_ID": STORE,
                "RETAIL_DATA_DIR": str(work / "agent"),
                "RETAIL_KAFKA_BROKERS": f"kafka://{bootstrap}",
                "RETAIL_EVENTS_TOPIC": TOPIC,
                "RETAIL_OUTLET_PORT": str(self.port),
                "RETAIL_CENTRAL_URL": "http://127.0.0.1:9",
                "RETAIL_LOG_LEVEL": "warning",
            }
        )
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def token(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "outlet_agent", "tokens", "add", "--terminal", "bench"],
            env=self.env, cwd=ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def start(self, *args: str) -> None:
        self.proc = spawn(
            ["taskset", "-c", "0", sys.executable, "-m", "outlet_agent", "run", *args],
            log_path=self.work / "agent.log",
            env=self.env,
            cwd=ROOT,
        )
        wait_until(lambda: port_answers(self.port), timeout=30, what="the outlet agent")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", text)
        return round(int(match.group(1)) / 1024, 1) if match else 0.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def wrk(url: str, token: str, *, seconds: int, batch: int, prefix: str, work: Path) -> float:
    """Events/s answered 2xx by 64 keep-alive connections (wrk on core 1)."""
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, BENCH_TOKEN=token, BENCH_BATCH=str(batch), BENCH_PREFIX=prefix)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "-s", str(script),
         f"{url}/v1/events"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    stats = orjson.loads(line.removeprefix("WRK_JSON "))
    if stats["status_errors"] or stats["socket_errors"]:
        print(f"  wrk: {stats}", file=sys.stderr)
    ok = stats["requests"] - stats["status_errors"]
    return ok * batch / (stats["duration_us"] / 1e6)


async def open_loop(url: str, token: str, *, rate: int, seconds: float) -> tuple[float, float]:
    """p50/p99 ms at a steady ``rate`` req/s, timed from each scheduled send.

    Open loop: request i is due at ``start + i / rate`` whatever happened to the
    others, and its latency counts from then, so a stall shows in the figures
    instead of slowing the generator down (no coordinated omission).
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:
        for i in range(50):  # open and warm a few keep-alive connections
            async with session.post("/v1/events", data=orjson.dumps(_sale(f"warm-{i}"))) as r:
                await r.read()

        async def one(i: int, at: float) -> None:
            nonlocal failures
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with session.post("/v1/events", data=orjson.dumps(_sale(f"lat-{i}"))) as r:
                await r.read()
                if r.status != 201:
                    failures += 1
                    return
            latencies.append(time.perf_counter() - at)

        start = time.perf_counter() + 0.2
        n = int(rate * seconds)
        await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
    if failures:
        print(f"  open loop: {failures} requests not answered 201", file=sys.stderr)
    latencies.sort()
    if not latencies:
        return float("nan"), float("nan")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return round(p50 * 1000, 2), round(p99 * 1000, 2)


def _sale(txn: str) -> dict[str, Any]:
    return {
        "type": "sale",
        "client_txn_id": txn,
        "occurred_at": "2025-01-02T10:00:00Z",
        "lines": [{"sku": "SKU-1", "qty": 1, "unit_price_cents": 199}],
    }


async def fill(url: str, token: str, n: int, prefix: str) -> None:
    """Put ``n`` events in the log fast (batch posts, forwarder off)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def worker(w: int, count: int) -> None:
            for b in range(0, count, 1000):
                events = [_sale(f"{prefix}-{w}-{b + i}") for i in range(min(1000, count - b))]
                r = await client.post("/v1/events", json={"events": events})
                assert r.status_code == 201, r.text

        await asyncio.gather(*(worker(w, n // 4) for w in range(4)))


def drain(agent: Agent, n: int) -> float:
    """Events/s forwarding a backlog of ``n`` to the broker; the agent just restarted."""
    t0 = time.perf_counter()
    while True:
        st = httpx.get(f"{agent.url}/v1/status", timeout=5).json()
        if st["forwarded_seq"] >= st["last_seq"] and st["last_seq"] >= n:
            return n / (time.perf_counter() - t0)
        time.sleep(0.02)


def run_batch20(seconds: int, rounds: int) -> dict[str, Any]:
    """Only the ``batch20_per_s`` phase (``--only batch20``): the same agent setup
    (forwarder on, sending to a real broker from the agent's core), ``rounds`` wrk
    runs back to back; the figure is their median, each run is listed too."""
    work = Path(tempfile.mkdtemp(prefix="outlet-bench-"))
    broker = TansuBroker(work / "tansu")
    broker.start()
    try:
        asyncio.run(create_topics(broker.bootstrap, {TOPIC: 8}))
        agent = Agent(work / "forwarding", broker.bootstrap)
        token = agent.token()
        agent.start()
        try:
            wrk(agent.url, token, seconds=2, batch=20, prefix="warm", work=work)
            runs: list[float] = []
            for r in range(rounds):
                runs.append(
                    wrk(agent.url, token, seconds=seconds, batch=20, prefix=f"b{r}", work=work)
                )
                print(f"round {r}: batch20 {runs[-1]:.0f}/s", file=sys.stderr)
        finally:
            agent.stop()
        return {
            "batch20_per_s": round(statistics.median(runs)),
            "batch20_runs": [round(x) for x in runs],
            "cores": os.cpu_count(),
        }
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


def run(seconds: int, drain_events: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="outlet-bench-"))
    broker = TansuBroker(work / "tansu")
    broker.start()
    try:
        asyncio.run(create_topics(broker.bootstrap, {TOPIC: 8}))
        results: dict[str, Any] = {}

        # the ceiling (the same HTTP stack answering without the log) and the durable
        # agent run side by side and are loaded in turn, several rounds, so a change
        # in the machine's background load hits both figures alike
        ceiling = Agent(work / "ceiling", broker.bootstrap)
        ceiling_token = ceiling.token()
        ceiling.start("--no-log")
        # the log alone (forwarder off), as the ceiling is without the log
        agent = Agent(work / "durable", broker.bootstrap, RETAIL_OUTLET_FORWARD="0")
        token = agent.token()
        agent.start()
        try:
            for a, t in ((ceiling, ceiling_token), (agent, token)):
                wrk(a.url, t, seconds=2, batch=1, prefix="warm", work=work)
            ceil_runs: list[float] = []
            acc_runs: list[float] = []
            for r in range(rounds):
                ceil_runs.append(
                    wrk(ceiling.url, ceiling_token, seconds=seconds, batch=1, prefix=f"c{r}",
                        work=work)
                )  # fmt: skip
                acc_runs.append(
                    wrk(agent.url, token, seconds=seconds, batch=1, prefix=f"a{r}", work=work)
                )
                print(f"round {r}: ceiling {ceil_runs[-1]:.0f}/s, durable {acc_runs[-1]:.0f}/s",
                      file=sys.stderr)  # fmt: skip
            ceiling.stop()
            results["ceiling_per_s"] = statistics.median(ceil_runs)
            results["accepted_per_s"] = statistics.median(acc_runs)
            results["ratio"] = statistics.median(
                acc / ceil for acc, ceil in zip(acc_runs, ceil_runs, strict=True)
            )
            print(f"accepted: {results['accepted_per_s']:.0f}/s", file=sys.stderr)
            agent.stop()
            # the same with the forwarder sending to the broker on the agent's core
            agent = Agent(work / "forwarding", broker.bootstrap)
            token = agent.token()
            agent.start()
            wrk(agent.url, token, seconds=2, batch=1, prefix="warm", work=work)
            results["accepted_forwarding_per_s"] = wrk(
                agent.url, token, seconds=seconds, batch=1, prefix="f", work=work
            )
            print(f"accepted, forwarding: {results['accepted_forwarding_per_s']:.0f}/s",
                  file=sys.stderr)  # fmt: skip
            results["batch20_per_s"] = wrk(
                agent.url, token, seconds=seconds, batch=20, prefix="b", work=work
            )
            print(f"batch20: {results['batch20_per_s']:.0f}/s", file=sys.stderr)
            wait_until(
                lambda: httpx.get(f"{agent.url}/v1/status").json()["backlog"] == 0,
                timeout=120,
                what="the forwarder to catch up",
            )
            os.sched_setaffinity(0, {1})  # the generator off the agent's core
            p50, p99 = asyncio.run(open_loop(agent.url, token, rate=200, seconds=10))
            results["p50_ms_at_200rps"], results["p99_ms_at_200rps"] = p50, p99
            print(f"latency at 200 req/s: p50 {p50} ms, p99 {p99} ms", file=sys.stderr)
        finally:
            ceiling.stop()
            agent.stop()

        # drain a backlog: fill with the forwarder off, then restart with it on
        for key, pack in (("drain_per_s", None), ("drain_unpacked_per_s", "1")):
            extra = {"RETAIL_FORWARD_PACK_MAX": pack} if pack else {}
            agent = Agent(work / f"drain-{key}", broker.bootstrap, **extra)
            token = agent.token()
            agent.env["RETAIL_OUTLET_FORWARD"] = "0"
            agent.start()
            try:
                asyncio.run(fill(agent.url, token, drain_events, key))
            finally:
                agent.stop()
            agent.env["RETAIL_OUTLET_FORWARD"] = "1"
            agent.start()
            try:
                results[key] = drain(agent, drain_events)
                if key == "drain_per_s":
                    results["peak_rss_mb"] = agent.peak_rss_mb()
            finally:
                agent.stop()
            print(f"{key}: {results[key]:.0f}/s", file=sys.stderr)

        return {
            "accepted_per_s": round(results["accepted_per_s"]),
            "ceiling_per_s": round(results["ceiling_per_s"]),
            "ratio": round(results["ratio"], 3),
            "accepted_forwarding_per_s": round(results["accepted_forwarding_per_s"]),
            "batch20_per_s": round(results["batch20_per_s"]),
            "p50_ms_at_200rps": results["p50_ms_at_200rps"],
            "p99_ms_at_200rps": results["p99_ms_at_200rps"],
            "drain_per_s": round(results["drain_per_s"]),
            "drain_unpacked_per_s": round(results["drain_unpacked_per_s"]),
            "peak_rss_mb": results["peak_rss_mb"],
            "drain_events": drain_events,
            "cores": os.cpu_count(),
        }
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outlet_bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/durable rounds")
    parser.add_argument("--drain-events", type=int, default=100_000)
    parser.add_argument(
        "--only",
        choices=["batch20"],
        help="run one phase only (its --rounds runs back to back); prints its JSON, "
        "leaves bench/results/outlet.json alone",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    if args.only == "batch20":
        print(orjson.dumps(run_batch20(args.seconds, args.rounds)).decode())
        return 0
    result = run(args.seconds, args.drain_events, args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
