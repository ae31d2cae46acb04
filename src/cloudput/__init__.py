"""cloudput: resumable, verified bulk uploads to S3, GCS and Azure Blob Storage."""

__version__ = "0.1.0"
