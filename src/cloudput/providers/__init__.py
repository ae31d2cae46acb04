"""Provider backends: one module per cloud, all behind the contract in ``base``."""

from __future__ import annotations

from cloudput.providers.base import Provider, ProviderSettings


def open_provider(name: str, settings: ProviderSettings) -> Provider:
    """Return the backend for ``name`` ("s3", "gcs", "azure"), imported lazily."""
    if name == "s3":
        from cloudput.providers.s3 import S3Provider

        return S3Provider(settings)
    if name == "gcs":
        from cloudput.providers.gcs import GcsProvider

        return GcsProvider(settings)
    if name == "azure":
        from cloudput.providers.azure import AzureProvider

        return AzureProvider(settings)
    raise ValueError(f"unknown provider {name!r}")
