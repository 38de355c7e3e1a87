import ray

from actors.runtime import node_ip


def test_local_ray_registers_its_node_on_loopback(ray_cluster):
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}

    @ray.remote(num_cpus=0)
    def where() -> str:
        return node_ip()

    assert ray.get(where.remote(), timeout=60) == "127.0.0.1"


def test_auto_does_not_join_a_cluster_that_no_longer_answers(monkeypatch):
    # A dead cluster's address (RAY_ADDRESS, or the file `ray start` leaves) made ray.init retry
    # for minutes; "auto" then starts a local Ray instead.
    import socket

    from actors.runtime import _auto_cluster_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed
    monkeypatch.setenv("RAY_ADDRESS", dead)
    assert not _auto_cluster_reachable()
    with socket.socket() as live:
        live.bind(("0.0.0.0", 0))  # Ray maps 127.0.0.1 in an address to this node's IP
        live.listen()
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{live.getsockname()[1]}")
        assert _auto_cluster_reachable()
