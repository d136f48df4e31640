"""What observability costs: the gateway's throughput with metrics and tracing on (every request
traced and exported over OTLP/HTTP to a local collector) against both off.

One run starts the fast mock upstream (bench/_mock_upstream.py), an OTLP/HTTP receiver that
decodes and counts the spans it gets (so the traced runs provably exported them), and four
`genloom serve` processes on the same config: one with `metrics.enabled: false` and no `OTEL_*`
variables, one with metrics only, and two with metrics on and `OTEL_EXPORTER_OTLP_ENDPOINT` set, sampling 10%
(`parentbased_traceidratio`, as a production deployment would) and 100% of requests. Each round measures both,
plain and streamed chat, at the chosen concurrency; rounds alternate the order so that drift
hits them alike. Run it as `genloom bench telemetry --help`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from gateway_bench import (  # noqa: E402
    ADMIN_KEY,
    MODEL,
    Server,
    Target,
    genloom_config,
    genloom_tenant_key,
    ready,
    run_async,
    run_level,
    start,
    stop,
)
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name, free_port  # noqa: E402

SECTION = "## Observability cost: metrics and tracing on against off"
OFF = "off"
# name -> (metrics on, OTEL_* variables beyond the endpoint; None: no tracing)
VARIANTS: dict[str, tuple[bool, dict[str, str] | None]] = {
    OFF: (False, None),
    "metrics": (True, None),
    "metrics + tracing 10%": (True, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
    "metrics + tracing 100%": (True, {}),
}


class SpanCounter:
    """An OTLP/HTTP receiver on 127.0.0.1 that counts the spans each export carries."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                counter.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench telemetry", description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--requests", type=int, default=1500, help="measured requests per round, mode and server")
    p.add_argument("--rounds", type=int, default=5, help="rounds (each measures every server; the order alternates)")
    p.add_argument("--warmup", type=int, default=100, help="requests before each measurement, not counted")
    p.add_argument("--write", type=Path, help="markdown file whose section is replaced with the result")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.argv, args.code = list(argv), code_state()
    collector = SpanCounter()
    results: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}  # the server's CPU ms per request: steadier than throughput
    with tempfile.TemporaryDirectory(prefix="genloom-telemetry-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mock_port = free_port()
        mock = Server("mock", [sys.executable, str(Path(__file__).with_name("_mock_upstream.py")), "--port", str(mock_port)],
                      tmp / "mock.log")
        servers = {
            name: (free_port(), {"metrics": {"enabled": metrics}},
                   {} if otel is None else otel | {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_SERVICE_NAME": "genloom-bench"})
            for name, (metrics, otel) in VARIANTS.items()
        }
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        running: list[Server] = [mock]
        targets: dict[str, Target] = {}
        try:
            start(mock, base_env)
            for i, (name, (port, extra, env)) in enumerate(servers.items()):
                config = genloom_config(f"http://127.0.0.1:{mock_port}", 256) | extra
                (tmp / f"{i}.yaml").write_text(yaml.safe_dump(config))
                server = Server(name, [sys.executable, "-m", "genloom.cli", "serve", "--config", str(tmp / f"{i}.yaml"),
                                       "--host", "127.0.0.1", "--port", str(port)], tmp / f"{i}.log")
                env_dir = {"GENLOOM_DATA_DIR": str(tmp / f"data-{i}"), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
                start(server, base_env | env_dir | env)
                running.append(server)
                if not ready(server, f"http://127.0.0.1:{port}/readyz"):
                    return 1
                key = genloom_tenant_key(f"http://127.0.0.1:{port}")
                assert server.proc is not None
                targets[name] = Target(name, "127.0.0.1", port, MODEL, {"Authorization": f"Bearer {key}"}, server.proc.pid)
            for round_ in range(args.rounds):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                for stream in (False, True):
                    for name in order:
                        row = run_async(run_level(targets[name], stream=stream, clients=args.clients, total=args.requests,
                                                  warmup=args.warmup, timeout_s=300))
                        if row.errors:
                            print(f"{name}: {row.errors} errors ({row.first_error})", file=sys.stderr)
                            return 1
                        results.setdefault((name, stream), []).append(row.requests_per_s)
                        if row.server_cpu_ms_per_request is not None:
                            cpu.setdefault((name, stream), []).append(row.server_cpu_ms_per_request)
                        print(f"round {round_ + 1} {'stream' if stream else 'plain'} {name}: {row.requests_per_s:,.0f} req/s, "
                              f"server CPU {row.server_cpu_ms_per_request or 0:.3f} ms/request", flush=True)
        finally:
            for server in reversed(running):
                stop(server)
            collector.close()
    spans = collector.spans
    lines = [SECTION, "", f"`{' '.join(['genloom bench telemetry', *(shlex.quote(a) for a in args.argv)])}`, "
             f"{datetime.date.today().isoformat()}, {args.code}, on {cpu_name()} ({os.cpu_count()} cores), "
             f"Python {platform.python_version()}; the gateway on a remote model (the mock upstream), {args.clients} clients, "
             f"{args.requests} requests per measurement, {args.rounds} rounds in alternating order.", "",
             "| variant | plain: req/s (median) | vs off | plain: server CPU ms/request | vs off "
             "| streamed: req/s (median) | vs off | streamed: server CPU ms/request | vs off |",
             "|---|---|---|---|---|---|---|---|---|"]
    cost: dict[str, float] = {}  # the larger extra server CPU per request of the two modes
    for name in VARIANTS:
        cells = []
        for stream in (False, True):
            value, off = median(results[(name, stream)]), median(results[(OFF, stream)])
            cpu_on, cpu_off = median(cpu[(name, stream)]), median(cpu[(OFF, stream)])
            cost[name] = max(cost.get(name, 0.0), cpu_on / cpu_off - 1)
            cells += [f"{value:,.0f}", f"{value / off:.3f}", f"{cpu_on:.3f}", f"{cpu_on / cpu_off:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"The traced servers exported {spans:,} spans to the local OTLP receiver. Extra server CPU per request in "
              "the worse mode: " + ", ".join(f"{name} {100 * c:.1f}%" for name, c in cost.items() if name != OFF)
              + " (goal: at most 5%). Throughput on two shared cores varies by more than that between rounds of the same "
              "server (see the rounds above the table when run), so the CPU each request costs the server is the figure "
              "to judge by; throughput follows it when the server is what limits.", ""]
    worst = 1 - cost["metrics + tracing 10%"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0 if worst >= 0.95 and spans > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
