"""Creating the project's topics with the configuration :mod:`schemas.topics` gives."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.settings import Settings
from schemas.topics import TOPICS, topic_configs

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions or settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=topic_configs(
                    spec,
                    timestamp_type=settings.input_timestamp_type,
                    min_insync_replicas=settings.min_insync_replicas,
                    dead_letter_retention_days=settings.dead_letter_retention_days,
                ),
            )
            for spec in TOPICS
            if settings.topic(spec.name) not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            # Another worker may have created it between the listing and our request.
            if code not in (0, TopicAlreadyExistsError.errno):
                detail = entry[2] if len(entry) > 2 else ""
                raise RuntimeError(f"could not create topic {name}: error {code} {detail}")
        names = [t.name for t in wanted]
        log.info("created topics %s", ", ".join(names))
        return names
    finally:
        await admin.close()
