"""The ledger tests reach RabbitMQ through the fixture of the backend contract."""

from __future__ import annotations

from ..test_backend_contract import amqp_url

__all__ = ["amqp_url"]
