"""The TcpProxy the fault tests cut: it forwards a link that stays idle, and cuts it on stop."""

import socket
import time

from taskhub_common.testing import REDIS_HOST, TcpProxy


def ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def test_an_idle_link_stays_up_until_the_proxy_is_stopped() -> None:
    proxy = TcpProxy(6379, REDIS_HOST)
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            assert ping(client) == b"+PONG\r\n"
            # Longer than the proxy's connect timeout, which once ended idle links (RabbitMQ
            # between heartbeats) after 5 s.
            time.sleep(6)
            assert ping(client) == b"+PONG\r\n"
            proxy.stop()
            assert client.recv(64) == b""
    finally:
        proxy.stop()
