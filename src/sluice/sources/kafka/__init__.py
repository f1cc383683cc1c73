"""The ``kafka`` source (confluent-kafka): see :mod:`.source`."""

from sluice.sources.kafka.config import KafkaSourceConfig
from sluice.sources.kafka.source import KafkaSource

__all__ = ["KafkaSource", "KafkaSourceConfig"]
