"""Shared fixtures: one local Ray on 127.0.0.1 per session, and the tiny model."""

import os

from actors.runtime import LOCAL_ENV

for _k, _v in LOCAL_ENV.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs on 127.0.0.1; actors in tests ask for fractional CPUs."""
    import ray

    from actors.runtime import init_ray

    init_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A few-hundred-thousand-parameter Llama with a locally trained tokenizer (HF folder)."""
    from r1ci.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_model")))
