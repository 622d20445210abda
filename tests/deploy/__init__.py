"""Checks of deploy/: Compose, Kubernetes, Grafana and the Dockerfile, without Docker."""
