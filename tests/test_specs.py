"""Every spec in specs/ checks, is canonical, and has the parameter count of the paper."""

import pytest

from cliquegraph import count_params, elaborate, fmt, parse_file
from conftest import SPECS

ALL = sorted(SPECS.glob("*.clq"))


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_every_spec_checks_and_is_canonical(path):
    net = elaborate(path)
    assert net.blocks
    spec = parse_file(path)
    assert fmt(spec) == spec.text


TABLE4 = [  # (overrides, params) computed from the original implementation's structure
    ({}, 935_994),                                   # 0.94M
    ({"k": 64, "T": 15}, 4_485_706),                 # 4.49M
    ({"k": 80, "T": 15}, 6_937_546),                 # 6.94M
    ({"k": 80, "T": 18}, 10_135_594),                # 10.14M
    ({"attention": True}, 977_898),                  # 0.98M
    ({"compression": True}, 1_037_434),              # 1.04M
    ({"attention": True, "compression": True}, 1_079_338),            # 1.08M
    ({"k": 80, "T": 15, "attention": True, "compression": True}, 7_998_138),  # 8M
    ({"k": 150, "T": 30, "attention": True, "bottleneck": True, "compression": True},
     10_480_938),                                    # ~10.48M by structure (PAPER.md)
    ({"k": 12, "T": 36}, 1_045_306),                 # README: CliqueNet(12,36) 1.05M
    ({"k": 24, "T": 18}, 986_650),                   # README: CliqueNet(24,18) 0.99M
]


@pytest.mark.parametrize("overrides,params", TABLE4)
def test_cliquenet_cifar_rows_of_table4(overrides, params):
    assert count_params(elaborate(SPECS / "cliquenet-cifar.clq", overrides)) == params


@pytest.mark.parametrize("overrides,params", [
    ({}, 1_019_722), ({"T": 96}, 6_979_642), ({"k": 24, "T": 96}, 27_249_082),
    ({"bc": True, "T": 96}, 769_162), ({"bc": True, "k": 24, "T": 246}, 15_324_406)])
def test_densenet_cifar_rows_of_table4(overrides, params):
    assert count_params(elaborate(SPECS / "densenet-cifar.clq", overrides)) == params


@pytest.mark.parametrize("name,params", [
    ("densenet-121", 7_978_856), ("densenet-169", 14_149_480), ("densenet-201", 20_013_928)])
def test_torchvision_densenets(name, params):
    assert count_params(elaborate(SPECS / f"{name}.clq")) == params


@pytest.mark.parametrize("name,star,full", [
    ("s0", 5_703_728, None), ("s1", 7_956_776, None),
    ("s2", 10_003_756, 11_008_376), ("s3", 13_170_904, 14_383_024)])
def test_imagenet_rows_of_table5(name, star, full):
    assert count_params(elaborate(SPECS / f"{name}.clq", {"attention": False})) == star
    if full is not None:
        assert count_params(elaborate(SPECS / f"{name}.clq")) == full
