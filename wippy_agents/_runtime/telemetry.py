"""Traces: spans for turns, model calls, tool calls, durable steps and registry commits, as OpenTelemetry has them.

The registry, the durable engine and the agents all open spans, so the one
`Telemetry` they are handed lives at the bottom of the stack. It holds a tracer
from the tracer provider the app was given (never one looked up on the way), whether
message contents may be recorded (`content`, off unless the app opts in), and the
app's redaction, which every recorded text and error goes through.

Off (no tracer), `span` hands out one shared null context: no SDK is imported,
nothing is allocated per span, and an app that traces nothing pays nothing. The
SDK (extra `[otel]`) is imported only by `otlp_provider`, when the app exports.

Spans follow the GenAI semantic conventions (`invoke_agent {agent}`,
`chat {model}`, `execute_tool {tool}` with `gen_ai.*` attributes) plus our own
`wippy.*` attributes. Trace context crosses a message between processes as a W3C
carrier (`carrier`, `parent_of`), since a process's context is not its asker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..errors import UsageError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = [
    "CONTENT_LIMIT",
    "ENDPOINT_VARIABLES",
    "OFF",
    "AttributeValue",
    "Telemetry",
    "ambient_provider",
    "otlp_provider",
    "shut_down",
    "trace_carrier",
]

AttributeValue = str | bool | int | float
CONTENT_LIMIT = 32_000
"""Recorded contents (messages, arguments, results) are cut to this many characters."""
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""The standard variables that turn the OTLP exporter on (the exporter reads them itself)."""
EXPORT_TIMEOUT = 5.0
"""Seconds one export request may take: a collector that is down delays nobody but the exporter's thread."""

_W3C = TraceContextTextMapPropagator()
_NOT_TRACED: AbstractContextManager[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


class Telemetry:
    """What code paths trace through: a tracer (None: tracing is off), whether contents are recorded, redaction."""

    def __init__(self, tracer: Tracer | None = None, *, content: bool = False,
                 redact: Callable[[str], str] = str) -> None:
        self.tracer = tracer
        self.content = content and tracer is not None
        """Whether message contents, tool arguments and results go on spans (the app opted in)."""
        self.redact = redact

    @property
    def on(self) -> bool:
        return self.tracer is not None

    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None, *,
             parent: Context | None = None,
             error_type: Callable[[BaseException], str] = _error_type) -> AbstractContextManager[Span]:
        """A span current for the `with` block (a child of `parent`, else of the current span); an exception
        leaving the block sets `error.type` and the ERROR status. Off: a shared null context."""
        if self.tracer is None:
            return _NOT_TRACED
        return _Current(self, self.tracer, name, attributes, parent, error_type)

    def failed(self, span: Span, kind: str, message: str) -> None:
        """Mark `span` as failed with `error.type` `kind` (the message is redacted)."""
        span.set_attribute("error.type", kind)
        span.set_status(StatusCode.ERROR, self.redact(message)[:CONTENT_LIMIT])

    def current(self) -> Span | None:
        """The span the caller runs in, to add what it learned (None when tracing is off)."""
        return None if self.tracer is None else trace.get_current_span()

    def record(self, span: Span | None, key: str, text: Callable[[], str]) -> None:
        """Put `text()` on `span` under `key` when contents are recorded: redacted, cut to `CONTENT_LIMIT`."""
        if self.content and span is not None:
            span.set_attribute(key, self.redact(text())[:CONTENT_LIMIT])

    def carrier(self) -> dict[str, str]:
        """The current trace context as W3C headers, for a message to another process (empty when off)."""
        return {} if self.tracer is None else trace_carrier()

    def parent_of(self, carrier: Mapping[str, str] | None) -> Context | None:
        """The context a `carrier` holds, to parent a span on (None: no carrier, or tracing is off)."""
        if self.tracer is None or not carrier:
            return None
        return _W3C.extract(carrier)


class _Current:
    """A span started and made current on entering the block, ended on leaving it (what `start_as_current_span`
    does, without its layers of generators: a turn opens several)."""

    __slots__ = ("attributes", "error_type", "name", "parent", "span", "telemetry", "token", "tracer")

    def __init__(self, telemetry: Telemetry, tracer: Tracer, name: str,
                 attributes: Mapping[str, AttributeValue] | None, parent: Context | None,
                 error_type: Callable[[BaseException], str]) -> None:
        self.telemetry, self.tracer, self.name, self.attributes = telemetry, tracer, name, attributes
        self.parent, self.error_type = parent, error_type

    def __enter__(self) -> Span:
        self.span = self.tracer.start_span(self.name, context=self.parent, attributes=self.attributes)
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None) -> None:
        try:
            otel_context.detach(self.token)
            if error is not None:
                self.telemetry.failed(self.span, self.error_type(error), str(error))
        finally:
            self.span.end()


OFF = Telemetry()
"""Tracing off: what every service uses unless the app hands it another."""


def trace_carrier() -> dict[str, str]:
    """The current span's context as W3C `traceparent`/`tracestate` headers (empty when no span is current)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def ambient_provider() -> trace.TracerProvider | None:
    """The process's global tracer provider if the program embedding us set one (else None: tracing stays off)."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider) else provider


def otlp_provider(endpoint: str | None, service: str) -> SdkTracerProvider:
    """A tracer provider exporting over OTLP HTTP/protobuf from a thread of its own (BatchSpanProcessor).

    `endpoint` is the base URL (traces go to `<endpoint>/v1/traces`); None lets the
    exporter read the standard `OTEL_EXPORTER_OTLP_*` variables itself. `service` is the
    resource's `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise UsageError("exporting traces needs the OpenTelemetry SDK: pip install 'wippy-agents[otel]' "
                         f"(or remove telemetry.otlp_endpoint and OTEL_EXPORTER_OTLP_ENDPOINT) ({error})") from None
    url = None if endpoint is None else endpoint.rstrip("/") + "/v1/traces"
    named = "OTEL_SERVICE_NAME" in os.environ  # the standard variable names the service instead
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT)))
    return provider


async def shut_down(provider: Any, timeout: float) -> None:
    """Export what is queued and stop `provider`'s exporter, waiting at most `timeout` seconds (off the loop).

    A daemon thread does it, so a collector that does not answer never holds up the
    loop or the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def stop() -> None:
        try:
            provider.shutdown()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=stop, name="wippy-otel-shutdown", daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, timeout)
