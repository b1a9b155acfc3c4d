"""The application's OpenTelemetry: off by default, traces when the deployment asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from slidebank.config import Settings
from slidebank.web.app import create_app


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """A configured global tracer provider, as a deployment's OpenTelemetry set-up makes
    one (it can be set once per process: every test of this module shares it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def _get_healthz(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200


def test_requests_are_not_traced_by_default(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    spans.clear()
    _get_healthz(Settings(home=tmp_path / "repo"))
    assert spans.get_finished_spans() == ()


def test_requests_are_traced_when_telemetry_is_on(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    _get_healthz(Settings(home=tmp_path / "repo", telemetry=True))
    names = [span.name for span in spans.get_finished_spans()]
    assert any("/healthz" in name for name in names), names
