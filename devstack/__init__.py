"""The embedded development stack: Tansu (Kafka protocol) and PostgreSQL 18.

For development, tests and demos only. Production never imports this package:
it points ``RETAIL_KAFKA_BROKERS`` and ``RETAIL_DATABASE_URL`` at real services.
"""

from devstack.stack import DevStack, StackInfo

__all__ = ["DevStack", "StackInfo"]
