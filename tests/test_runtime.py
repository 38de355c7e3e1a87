import ray

from actors.runtime import node_ip


def test_local_ray_registers_its_node_on_loopback(ray_cluster):
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}

    @ray.remote(num_cpus=0)
    def where() -> str:
        return node_ip()

    assert ray.get(where.remote(), timeout=60) == "127.0.0.1"
