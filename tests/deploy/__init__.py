"""Checks of deploy/: Prometheus rules and their unit tests, the Grafana dashboard, compose,
Kubernetes manifests and the container image definition. No broker, no Docker engine."""
