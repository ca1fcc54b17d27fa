"""``localrun.runtime.free_port`` hands out ports an outgoing connection cannot take first: below the
kernel's ephemeral range (where source ports come from), each once per process, and free when handed out."""

from __future__ import annotations

import socket

from localrun.runtime import _ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < _ephemeral_low() for port in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_source_port_of_an_outgoing_connection_is_never_handed_out() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        clients = [socket.create_connection(server.getsockname()) for _ in range(20)]
        try:
            sources = {c.getsockname()[1] for c in clients}
            assert not sources & {free_port() for _ in range(200)}
        finally:
            for c in clients:
                c.close()
