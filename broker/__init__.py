"""Mosquitto configuration, accounts and launcher for Natalia. See ``broker/README.md``."""

from broker.accounts import PasswordFile, generate_password, hash_password
from broker.config import HUB_USER, BrokerSettings, render
from broker.launcher import BrokerError, BrokerProcess, find_mosquitto, free_port

__all__ = [
    "HUB_USER",
    "BrokerError",
    "BrokerProcess",
    "BrokerSettings",
    "PasswordFile",
    "find_mosquitto",
    "free_port",
    "generate_password",
    "hash_password",
    "render",
]
