"""loadtest: a load-test harness that speaks only the public protocol and HTTP API."""
