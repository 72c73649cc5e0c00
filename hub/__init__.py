"""The Natalia hub: receives wristband alarms over MQTT, stores them and notifies people.

Importing ``hub`` stays light; the service modules pull in gmqtt, SQLModel and pluggy.
"""

__version__ = "0.1.0"
