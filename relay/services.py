"""The relay's long-lived clients, built once per process from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis

from relay.config import Settings
from relay.directory import Directory
from relay.knock.client import KnockClient
from relay.persistence import PersistenceCheck
from relay.queue import DeliveryQueue, build_broker
from relay.redis_connection import connect
from relay.routing import RoutingRules
from relay.store import DeliveryStore


@dataclass
class Services:
    settings: Settings
    #: The worker waits out a silent Redis instead of timing out (see queue.build_broker).
    patient: bool = False

    @cached_property
    def redis(self) -> redis.Redis:
        # Short timeouts: a webhook should answer 503 quickly when Redis is away.
        return connect(
            self.settings,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
            decode_responses=True,
        )

    @cached_property
    def persistence(self) -> PersistenceCheck:
        return PersistenceCheck(self.redis, required=self.settings.require_durable_redis)

    @cached_property
    def directory(self) -> Directory:
        return Directory(self.redis)

    @cached_property
    def store(self) -> DeliveryStore:
        return DeliveryStore(
            self.redis,
            record_ttl=self.settings.record_ttl_seconds,
            dedup_ttl=self.settings.dedup_ttl_seconds,
            sent_body_ttl=self.settings.sent_body_ttl_seconds,
            min_replicas=self.settings.redis_min_replicas,
            replica_timeout_ms=self.settings.redis_replica_timeout_ms,
            # The worker (patient) records outcomes only once they would survive a failover.
            outcome_replicas=self.settings.redis_min_replicas if self.patient else 0,
        )

    @cached_property
    def broker(self):  # type: ignore[no-untyped-def]
        return build_broker(self.settings, patient=self.patient)

    @cached_property
    def queue(self) -> DeliveryQueue:
        return DeliveryQueue(self.broker)

    @cached_property
    def knock(self) -> KnockClient:
        return KnockClient(
            self.settings.knock_base_url,
            self.settings.knock_api_key,
            timeout=self.settings.knock_timeout_seconds,
        )

    @cached_property
    def rules(self) -> RoutingRules:
        s = self.settings
        return RoutingRules(
            mailbox_domains=s.mailbox_domains,
            automated_senders=s.automated_senders,
            reply_tag_prefix=s.reply_tag_prefix,
            reply_tag_secrets=s.reply_tag_secrets,
            accept_unsigned_reply_tags=s.accept_unsigned_reply_tags,
            knock_logged_domains=s.knock_logged_domains,
            spam_policy=s.spam_policy,
            spam_threshold=s.spam_score_threshold,
            ignore_auto_replies=s.ignore_auto_replies,
            sender_auth=s.sender_auth,
        )
