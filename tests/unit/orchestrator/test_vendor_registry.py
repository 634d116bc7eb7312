"""Every provider type a policy may name has an adapter, and only those."""

from typing import get_args

from tollgate_common.policy import TYPE_APIS, ProviderType
from tollgate_orchestrator.providers import openai  # noqa: F401 (imports every vendor)
from tollgate_orchestrator.providers.vendors import VENDORS


def test_every_provider_type_has_a_vendor() -> None:
    assert set(VENDORS) == set(get_args(ProviderType))


def test_every_provider_type_has_native_apis() -> None:
    assert set(TYPE_APIS) == set(get_args(ProviderType))
    for vendor_type, vendor in VENDORS.items():
        assert vendor.type == vendor_type
