"""Where a matrix's records are also logged: the matrix's `tracking: {backend, uri}` or `--track
backend[=URI]`. Pure: it names a backend; bench.tracking opens it. Never part of a cell's key.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("mlflow", "wandb")


class TrackingSpecError(ValueError):
    """A tracking setting is wrong; the message says the fix."""


@dataclass(frozen=True)
class TrackingSpec:
    backend: str  # mlflow | wandb
    uri: str | None = None  # mlflow: a tracking URI (None: SQLite in the results directory); wandb: unused

    def describe(self) -> str:
        return self.backend + (f"={self.uri}" if self.uri else "")


def parse_option(text: str) -> TrackingSpec:
    """`--track mlflow`, `--track mlflow=http://127.0.0.1:5000`, `--track wandb`."""
    backend, _, uri = text.partition("=")
    return checked(backend.strip(), uri.strip() or None)


def parse_mapping(raw) -> TrackingSpec:
    """The matrix's `tracking:` value: {backend: mlflow, uri: ...}."""
    if not isinstance(raw, dict) or set(raw) - {"backend", "uri"} or "backend" not in raw:
        raise TrackingSpecError("must be a mapping {backend: mlflow | wandb, uri: optional URI}")
    uri = raw.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise TrackingSpecError("'uri' must be a string, e.g. http://127.0.0.1:5000")
    return checked(str(raw["backend"]), uri or None)


def checked(backend: str, uri: str | None) -> TrackingSpec:
    if backend not in BACKENDS:
        raise TrackingSpecError(f"unknown tracking backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "wandb" and uri:
        raise TrackingSpecError("wandb takes no URI: its environment (WANDB_MODE, WANDB_BASE_URL) says where")
    return TrackingSpec(backend, uri)
