"""Kafka (librdkafka through confluent-kafka): what the ``kafka`` source and sink share."""
