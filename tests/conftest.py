"""Shared fixtures: real clusters on OS-chosen ports, one per test."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_BPMN = EXAMPLES / "demo-process.bpmn"
ORDER_BPMN = EXAMPLES / "order-process.bpmn"
# Fast timers for tests: snapshots often, retries quickly, short gateway timeout.
FAST_BROKER_ARGS = ["--snapshot-period", "2s", "--retry-initial", "200ms", "--retry-max", "1s"]
FAST_GATEWAY_ARGS = ["--request-timeout", "5s"]
