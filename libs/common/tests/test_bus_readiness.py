"""RabbitMQ taken away from a connected bus: readiness turns false while the robust connection
reconnects (it said `broker: ok` during a whole outage), and true again once it is back."""

import asyncio
import time
from collections.abc import Callable

from yarl import URL

from taskhub_common.bus import RabbitMQBus
from taskhub_common.testing import RABBITMQ_URL, TcpProxy


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def test_readiness_follows_the_broker_connection() -> None:
    broker = URL(RABBITMQ_URL)
    proxy = TcpProxy(broker.port or 5672, broker.host or "127.0.0.1")
    proxy.start()
    bus = RabbitMQBus(str(broker.with_port(proxy.port)))
    await bus.start()
    try:
        await asyncio.wait_for(bus.wait_connected(), timeout=15)
        assert bus.is_ready()

        proxy.stop()
        assert await eventually(lambda: not bus.is_ready()), "ready while RabbitMQ is cut off"
        assert bus.connection is not None and not bus.connection.is_closed, (
            "the robust connection is reconnecting, not closed: what used to fool readiness"
        )

        proxy.start()
        assert await eventually(bus.is_ready), "not ready again after RabbitMQ came back"
    finally:
        await bus.close()
        proxy.stop()
