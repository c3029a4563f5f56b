"""The `docker` shim Vagrant's docker provider runs: podman's networks in Docker's shape."""

from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parent.parent / "tools/podman-docker/docker"


@pytest.fixture(scope="module")
def shim():
    loader = SourceFileLoader("podman_docker_shim", str(SHIM))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_vagrant_network_names_lose_the_characters_podman_refuses(shim):
    assert shim.podman_name("vagrant_network_192.168.56.0/24") == "vagrant_network_192.168.56.0_24"
    assert shim.podman_name("vagrant_network_fd00::1/64") == "vagrant_network_fd00__1_64"
    # Other arguments (images, flags, container names) pass unchanged.
    assert (
        shim.podman_name("localhost/r3e-testbed/debian12:latest") == "localhost/r3e-testbed/debian12:latest"
    )


def test_podman_network_is_shown_in_dockers_shape(shim):
    podman = {
        "name": "vagrant_network_192.168.56.0_24",
        "id": "abc",
        "driver": "bridge",
        "subnets": [{"subnet": "192.168.56.0/24", "gateway": "192.168.56.1"}],
        "ipv6_enabled": False,
        "internal": False,
    }
    docker = shim.docker_network(podman, {"vagrant_network_192.168.56.0_24": ["c1", "c2"], "podman": ["c3"]})
    assert docker["Name"] == "vagrant_network_192.168.56.0_24"
    assert docker["IPAM"]["Config"] == [{"Subnet": "192.168.56.0/24", "Gateway": "192.168.56.1"}]
    assert docker["Containers"] == {"c1": {}, "c2": {}}


def test_network_without_subnets_has_an_empty_ipam_config(shim):
    docker = shim.docker_network({"name": "n"}, {})
    assert docker["IPAM"]["Config"] == []
    assert docker["Containers"] == {}
