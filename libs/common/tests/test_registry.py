"""The one list of services and what reads it."""

from taskhub_common.registry import SERVICES
from taskhub_common.settings import ServiceSettings


def test_every_service_has_a_url_setting_on_its_port() -> None:
    settings = ServiceSettings()
    for entry in SERVICES:
        assert getattr(settings, entry.url_setting) == f"http://127.0.0.1:{entry.port}"


def test_names_ports_and_routes_are_unique() -> None:
    assert len({entry.name for entry in SERVICES}) == len(SERVICES)
    assert len({entry.port for entry in SERVICES}) == len(SERVICES)
    prefixes = [prefix for entry in SERVICES for prefix in entry.prefixes]
    assert len(set(prefixes)) == len(prefixes)


def test_every_factory_makes_an_app() -> None:
    import importlib

    for entry in SERVICES:
        module, factory = entry.app_factory.split(":")
        assert callable(getattr(importlib.import_module(module), factory))
