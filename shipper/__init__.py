"""shipper: ships JSON log files to S3-compatible storage, exactly once."""

__all__ = ["__version__"]

__version__ = "0.1.0"
