"""The device catalog: every row is sane, and the classes the fleet expects are there."""

import pytest

from optimizer.catalog import CATALOG, CATALOG_VERSION, NAME_PATTERN, by_name

REQUIRED = {"H200", "H100-SXM", "A100-80GB", "L40S", "L4", "A10G", "MI300X", "Gaudi2", "Gaudi3"}
FABRICS = {"nvlink", "infinity-fabric", "gaudi-roce", "pcie", "ethernet"}


def test_required_classes_and_one_cpu_class_are_present() -> None:
    names = {spec.name for spec in CATALOG}
    assert REQUIRED <= names
    assert [spec.name for spec in CATALOG if spec.is_cpu], "the catalog needs a CPU class"


def test_names_are_unique_and_well_formed() -> None:
    names = [spec.name for spec in CATALOG]
    assert len(names) == len(set(names))
    assert all(NAME_PATTERN.fullmatch(name) for name in names)


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.name)
def test_every_row_is_sane(spec) -> None:
    assert spec.bf16_tflops > 0 and spec.memory_gib > 0 and spec.memory_gbps > 0
    assert spec.usd_per_hour > 0
    assert spec.slices_per_device >= 1
    assert spec.fabric in FABRICS
    assert spec.vendor and spec.price_source
    # CPU slices are groups of whole cores.
    assert spec.cores == 0 or spec.cores % spec.slices_per_device == 0


def test_mig_capable_parts_have_seven_slices_and_others_one() -> None:
    for spec in CATALOG:
        if spec.name in {"H200", "H100-SXM", "A100-80GB"}:
            assert spec.slices_per_device == 7
        elif not spec.is_cpu:
            assert spec.slices_per_device == 1


def test_dense_not_sparse_figures() -> None:
    # H100 SXM: 989 TFLOP/s dense bf16 (1979 is the 2:4-sparse figure).
    assert by_name("H100-SXM").bf16_tflops == pytest.approx(989, rel=0.02)
    # A faster generation of the same vendor is not slower on paper.
    assert by_name("H200").memory_gbps > by_name("H100-SXM").memory_gbps > by_name("A100-80GB").memory_gbps


def test_by_name_finds_and_rejects_with_the_known_names() -> None:
    assert by_name("L40S").memory_gib == 48
    with pytest.raises(KeyError, match="unknown device class 'B999'.*H100-SXM"):
        by_name("B999")


def test_catalog_is_versioned() -> None:
    assert CATALOG_VERSION
