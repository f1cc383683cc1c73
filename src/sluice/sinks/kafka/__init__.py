"""The ``kafka`` sink (confluent-kafka): see :mod:`.sink`."""

from sluice.sinks.kafka.config import KafkaSinkConfig
from sluice.sinks.kafka.sink import KafkaSink

__all__ = ["KafkaSink", "KafkaSinkConfig"]
