"""solar_ros.settings: ``key=value`` overrides of config dataclasses, parsed by field type and validated."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from solar_ros.settings import SettingsError, apply_overrides, changed_settings, config_fields, lookup, parse_value


@dataclass
class Inner:
    steps: int = 10
    rate: float = 0.5


@dataclass
class Toy:
    iterations: int = 3
    kl_step: float = 1.0
    adapt: bool = True
    encoder: str = "conv"
    window: int | None = 5
    weight: float | None = None
    channels: tuple[int, int, int] = (32, 16, 16)
    names: list[str] = dataclasses.field(default_factory=list)
    inner: Inner | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"Toy.iterations must be a positive integer, got {self.iterations!r}")
        if self.encoder not in ("conv", "keypoints"):
            raise ValueError(f"Toy.encoder must be 'conv' or 'keypoints', got {self.encoder!r}")


def test_config_fields_lists_every_field_and_nested_ones():
    fields = config_fields(Toy)
    assert list(fields)[:9] == ["iterations", "kl_step", "adapt", "encoder", "window", "weight", "channels", "names",
                                "inner"]
    assert fields["inner.steps"] is int and fields["window"] == int | None
    assert config_fields(Toy()) == fields


def test_values_are_parsed_by_field_type():
    cfg = apply_overrides(Toy(), ["iterations=7", "kl_step=2.5", "adapt=false", "encoder=keypoints", "window=None",
                                  "weight=0.25", "channels=8,4,2", "names=[a, b]"])
    assert cfg == Toy(iterations=7, kl_step=2.5, adapt=False, encoder="keypoints", window=None, weight=0.25,
                      channels=(8, 4, 2), names=["a", "b"])
    assert isinstance(cfg.iterations, int) and isinstance(cfg.kl_step, float)
    assert apply_overrides(Toy(), ["iterations=1e3", "kl_step=3", "adapt=Yes", "window=null"]) == \
        Toy(iterations=1000, kl_step=3.0, adapt=True, window=None)
    assert parse_value("-0.5", float) == -0.5 and parse_value(" 2 ", int | None) == 2
    assert parse_value("(1, 2, 3)", tuple[int, int, int]) == (1, 2, 3)


def test_the_original_is_unchanged_and_later_settings_win():
    base = Toy()
    cfg = apply_overrides(base, ["iterations=4", "iterations=5"])
    assert cfg.iterations == 5 and base.iterations == 3
    assert apply_overrides(base, []) is base


def test_nested_settings_start_from_the_nested_defaults():
    cfg = apply_overrides(Toy(), ["inner.rate=0.1"])
    assert cfg.inner == Inner(steps=10, rate=0.1)
    cfg2 = apply_overrides(Toy(inner=Inner(steps=99)), ["inner.rate=0.2"])
    assert cfg2.inner == Inner(steps=99, rate=0.2)
    assert apply_overrides(cfg2, ["inner=None"]).inner is None
    with pytest.raises(SettingsError, match="one by one"):
        apply_overrides(Toy(), ["inner=3"])


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(SettingsError) as err:
        apply_overrides(Toy(), ["kl_stp=2"])
    text = str(err.value)
    assert "unknown setting 'kl_stp' for Toy" in text and "did you mean kl_step" in text
    assert "valid settings: iterations, kl_step, adapt, encoder" in text and "inner.steps" in text


@pytest.mark.parametrize("item, message", [
    ("iterations=abc", "expected an integer"),
    ("iterations=2.5", "expected an integer"),
    ("kl_step=fast", "expected a number"),
    ("adapt=maybe", "expected true or false"),
    ("window=x", "expected int | None"),
    ("channels=1,2", "expected 3 comma-separated values"),
    ("iterations", "is not KEY=VALUE"),
    ("=3", "is not KEY=VALUE"),
])
def test_unreadable_values_are_errors(item, message):
    with pytest.raises(SettingsError, match=message):
        apply_overrides(Toy(), [item])


def test_the_dataclass_validates_the_result_with_its_own_message():
    with pytest.raises(SettingsError, match=r"Toy.iterations must be a positive integer, got 0"):
        apply_overrides(Toy(), ["iterations=0"])
    with pytest.raises(SettingsError, match=r"Toy.encoder must be 'conv' or 'keypoints', got 'mlp'"):
        apply_overrides(Toy(), ["encoder=mlp"])
    assert issubclass(SettingsError, ValueError)


def test_changed_settings_and_lookup_match_asdict():
    changed = changed_settings(Toy(), ["inner.rate=0.1", "window=None"])
    cfg = dataclasses.asdict(apply_overrides(Toy(), ["inner.rate=0.1", "window=None"]))
    assert changed == {"inner.rate": 0.1, "window": None}
    assert all(lookup(cfg, k) == v for k, v in changed.items())
    assert lookup(cfg, "inner.nothing", "absent") == "absent"
