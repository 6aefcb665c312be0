"""A real OTLP trace receiver for the end-to-end tests, built on the official
`opentelemetry-proto` messages and `grpcio`.

`OtlpReceiver` serves both OTLP transports on loopback ports it picks itself:
- gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
  `receiver.grpc_endpoint` (`http://127.0.0.1:PORT`);
- HTTP: `POST /v1/traces` with an `application/x-protobuf` (or
  `application/json`) ExportTraceServiceRequest, gzip or not, on
  `receiver.http_endpoint` (base URL; `receiver.http_traces_url` is the full
  traces URL). The answer is an empty ExportTraceServiceResponse in the
  request's encoding.

Every received span is kept as a `Span` with its resource's attributes, the
transport it came by and its attributes decoded to Python values. Waiting for
spans is bounded and event driven (a `threading.Condition` notified on each
export), never slept for.

Outage modes, for the "collector down" tests:
- `stop()`: both servers shut down, the listening sockets closed and every open
  connection cut, so a new connection is refused; `start()` brings them back
  on the same ports.
- `stall()`: exports are accepted (the request is read) but never answered
  until `release()` (or `stop()`/`close()`); released exports are then
  stored and answered normally.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

#: Span kinds and status codes of the OTLP protocol, by name.
KIND_INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL
KIND_SERVER = trace_pb2.Span.SPAN_KIND_SERVER
KIND_CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
STATUS_UNSET = trace_pb2.Status.STATUS_CODE_UNSET
STATUS_OK = trace_pb2.Status.STATUS_CODE_OK
STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR

#: Bound on a bind retry when coming back on the same port.
_REBIND_TIMEOUT = 10.0


def any_value(v: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as a Python value: str, bool, int, float, bytes,
    list (array) or dict (kvlist); None when unset."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated KeyValue as a dict of decoded values."""
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class Event:
    name: str
    time_ns: int
    attrs: dict[str, Any]


@dataclass
class Span:
    """One received span, flattened for assertions."""

    transport: str  # "grpc" or "http"
    resource: dict[str, Any]
    scope: str
    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 lower-case hex digits
    parent_span_id: str  # "" for a root span
    trace_state: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    events: list[Event]
    status_code: int
    status_message: str
    links: int = 0
    proto: trace_pb2.Span | None = field(default=None, repr=False)

    @property
    def service(self) -> str | None:
        return self.resource.get("service.name")

    @property
    def kind_name(self) -> str:
        return trace_pb2.Span.SpanKind.Name(self.kind)

    @property
    def status_name(self) -> str:
        return trace_pb2.Status.StatusCode.Name(self.status_code)

    def event(self, name: str) -> Event | None:
        for e in self.events:
            if e.name == name:
                return e
        return None

    def short(self) -> str:
        return (f"{self.service}:{self.name!r} {self.kind_name} {self.status_name} "
                f"trace={self.trace_id} span={self.span_id} parent={self.parent_span_id or '-'} "
                f"attrs={self.attrs}")


def _flatten(req: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> list[Span]:
    out: list[Span] = []
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(
                    transport=transport,
                    resource=resource,
                    scope=ss.scope.name,
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    trace_state=s.trace_state,
                    name=s.name,
                    kind=s.kind,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    attrs=attributes(s.attributes),
                    events=[Event(e.name, e.time_unix_nano, attributes(e.attributes)) for e in s.events],
                    status_code=s.status.code,
                    status_message=s.status.message,
                    links=len(s.links),
                    proto=s,
                ))
    return out


class _Stalled(Exception):
    """Raised in a handler when the receiver stopped while it stalled."""


class OtlpReceiver:
    """See the module docs. Use as a context manager, or call `close()`."""

    def __init__(self, grpc_workers: int = 16) -> None:
        self.cond = threading.Condition()
        self._spans: list[Span] = []
        #: Export calls answered (successfully), by transport.
        self.exports: dict[str, int] = {"grpc": 0, "http": 0}
        # The headers of the last export call, by transport.
        self.last_headers: dict[str, dict[str, str]] = {}
        #: Export calls that arrived while stalled (answered or not).
        self.stalled_calls = 0
        self._stalled = False
        self._running = False
        self._grpc_workers = grpc_workers
        self._grpc_server: grpc.Server | None = None
        self._http_server: http.server.ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._http_conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.grpc_port = 0
        self.http_port = 0
        self.start()

    # ----- endpoints -----

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The base URL (what OTEL_EXPORTER_OTLP_ENDPOINT takes)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_traces_url(self) -> str:
        """The full URL (what OTEL_EXPORTER_OTLP_TRACES_ENDPOINT takes)."""
        return f"{self.http_endpoint}/v1/traces"

    def endpoint(self, protocol: str) -> str:
        """The endpoint for `--otel-endpoint` with `--otel-protocol protocol`."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_traces_url

    # ----- lifecycle -----

    def start(self) -> None:
        """Starts (or restarts, on the same ports) both servers, not stalled."""
        with self.cond:
            if self._running:
                return
            self._stalled = False
        self._start_grpc()
        self._start_http()
        with self.cond:
            self._running = True
            self.cond.notify_all()

    def _start_grpc(self) -> None:
        deadline = time.monotonic() + _REBIND_TIMEOUT
        while True:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=self._grpc_workers, thread_name_prefix="otlp-grpc"),
                maximum_concurrent_rpcs=None,
            )
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
            try:
                port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
            except RuntimeError:
                port = 0
            if port:
                break
            server.stop(None)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"cannot bind the OTLP gRPC port {self.grpc_port}")
            time.sleep(0.05)
        self.grpc_port = port
        server.start()
        self._grpc_server = server

    def _start_http(self) -> None:
        receiver = self
        deadline = time.monotonic() + _REBIND_TIMEOUT

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        while True:
            try:
                server = Server(("127.0.0.1", self.http_port), _make_http_handler(receiver))
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self.http_port = server.server_address[1]
        self._http_server = server
        self._http_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                             name="otlp-http", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        """STOP mode: both servers down, connections refused and cut. Stalled
        exports are abandoned (their connections cut, no answer)."""
        with self.cond:
            if not self._running:
                return
            self._running = False
            self.cond.notify_all()
        if self._grpc_server is not None:
            self._grpc_server.stop(None).wait(10)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        with self._conns_lock:
            conns = list(self._http_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
            self._http_thread = None

    def stall(self) -> None:
        """STALL mode: exports are read but not answered until `release()`."""
        with self.cond:
            self._stalled = True

    def release(self) -> None:
        """Ends STALL mode: held exports are stored and answered."""
        with self.cond:
            self._stalled = False
            self.cond.notify_all()

    def close(self) -> None:
        self.release()
        self.stop()

    def __enter__(self) -> "OtlpReceiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def running(self) -> bool:
        with self.cond:
            return self._running

    # ----- ingestion (called by the servers) -----

    def _hold_if_stalled(self) -> None:
        with self.cond:
            if self._stalled:
                self.stalled_calls += 1
                self.cond.notify_all()
            while self._stalled and self._running:
                self.cond.wait()
            if not self._running:
                raise _Stalled()

    def _ingest(self, req: trace_service_pb2.ExportTraceServiceRequest, transport: str,
                headers: dict[str, str] | None = None) -> None:
        spans = _flatten(req, transport)
        with self.cond:
            if headers is not None:
                self.last_headers[transport] = headers
            self._spans.extend(spans)
            self.exports[transport] += 1
            self.cond.notify_all()

    # ----- queries -----

    def spans(self, pred: Callable[[Span], bool] | None = None) -> list[Span]:
        """The spans received so far (that match `pred`), in arrival order."""
        with self.cond:
            return [s for s in self._spans if pred is None or pred(s)]

    def export_count(self) -> int:
        with self.cond:
            return sum(self.exports.values())

    def wait_for_spans(self, pred: Callable[[Span], bool], count: int = 1, timeout: float = 20.0,
                       what: str = "spans") -> list[Span]:
        """Waits until at least `count` received spans match `pred`; returns
        them all. Fails after `timeout` with what did arrive."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [s for s in self._spans if pred(s)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = "\n  ".join(s.short() for s in self._spans[-15:])
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {count} {what}; {len(got)} matched, "
                        f"{len(self._spans)} spans received in {self.exports} exports; the last ones:\n  {recent}"
                    )
                self.cond.wait(left)

    def wait_for_stalled_calls(self, count: int = 1, timeout: float = 20.0) -> int:
        """Waits until at least `count` exports have arrived while stalled."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.stalled_calls < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {count} stalled "
                                         f"export(s); got {self.stalled_calls}")
                self.cond.wait(left)
            return self.stalled_calls

    def wait_for_exports(self, more_than: int, timeout: float = 20.0) -> int:
        """Waits until more than `more_than` exports have been answered."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                n = sum(self.exports.values())
                if n > more_than:
                    return n
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for an OTLP export "
                                         f"(answered so far: {self.exports})")
                self.cond.wait(left)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.r = receiver

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
               context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        try:
            self.r._hold_if_stalled()
        except _Stalled:
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        self.r._ingest(request, "grpc",
                       {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return trace_service_pb2.ExportTraceServiceResponse()


def _make_http_handler(receiver: OtlpReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with receiver._conns_lock:
                receiver._http_conns.add(self.connection)

        def finish(self) -> None:
            with receiver._conns_lock:
                receiver._http_conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.split("?", 1)[0] != "/v1/traces":
                self._reply(404, b"not found", "text/plain")
                return
            enc = (self.headers.get("content-encoding") or "").lower()
            try:
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
                req = trace_service_pb2.ExportTraceServiceRequest()
                if ctype == "application/x-protobuf":
                    req.ParseFromString(body)
                elif ctype == "application/json":
                    json_format.Parse(body, req)
                else:
                    self._reply(415, b"unsupported content type", "text/plain")
                    return
            except Exception as e:  # noqa: BLE001 - a bad export is a 400
                self._reply(400, f"bad export: {e}".encode(), "text/plain")
                return
            try:
                receiver._hold_if_stalled()
            except _Stalled:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            receiver._ingest(req, "http", {k.lower(): v for k, v in self.headers.items()})
            resp = trace_service_pb2.ExportTraceServiceResponse()
            if ctype == "application/json":
                self._reply(200, json_format.MessageToJson(resp).encode(), "application/json")
            else:
                self._reply(200, resp.SerializeToString(), "application/x-protobuf")

    return Handler
