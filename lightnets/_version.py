"""The version, on the ground floor so that every module can record it without importing the package root."""

__version__ = "0.1.0"
