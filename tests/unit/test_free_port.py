"""``free_port`` never hands out a port twice in one process (two agents once shared one)."""

from __future__ import annotations

from devstack.process import free_port, port_is_free


def test_free_port_never_repeats_itself() -> None:
    # the kernel offered some port twice in 500 probes here before this guard
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(port_is_free(p) for p in ports[-5:])
