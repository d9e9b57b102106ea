"""Fixture library for Portcullis end-to-end tests: processes, ports, manifests, real peers."""
