"""The SDK's version: the ``natalia`` distribution's (a test keeps them equal)."""

__version__ = "0.1.0"
