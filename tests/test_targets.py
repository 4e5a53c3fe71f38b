import json

import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.errors import TargetError
from edgeprune.targets import load_target, shipped_names

SHIPPED = ["coral-usb", "cortex-m4", "cortex-m7", "ethos-u55", "host", "rpi4", "rpi5"]


def test_every_required_profile_ships_and_loads():
    assert set(SHIPPED) <= set(shipped_names())
    for name in SHIPPED:
        t = load_target(name)
        assert t.name == name
        assert t.budgets.flash_kb and t.budgets.accuracy_drop is not None
        assert t.hardware.channel_multiple >= 1


def test_inherit_takes_parent_values_and_overrides():
    rpi5, rpi4 = load_target("rpi5"), load_target("rpi4")
    assert rpi5.hardware.cpu == "cortex-a76" and rpi5.hardware.clock_mhz == 2400
    assert rpi5.runtime == rpi4.runtime
    assert rpi5.budgets.latency_ms == 3.0
    assert rpi5.budgets.flash_kb == rpi4.budgets.flash_kb
    assert rpi5.build == rpi4.build


def test_profiles_are_frozen():
    t = load_target("rpi4")
    with pytest.raises(AttributeError):
        t.name = "other"  # type: ignore[misc]


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_profile_by_path_inheriting_a_shipped_one(tmp_path):
    text = 'inherit = "cortex-m4"\nname = "mine"\n[budgets]\nram_kb = 64\n'
    p = _write(tmp_path, "mine.toml", text)
    t = load_target(str(p))
    assert t.name == "mine" and t.budgets.ram_kb == 64 and t.hardware.clock_mhz == 64


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetError) as e:
        load_target("rpi9")
    assert "rpi9" in str(e.value) and "rpi4" in str(e.value) and "cortex-m7" in str(e.value)


def test_syntax_error_names_file_and_line(tmp_path):
    p = _write(tmp_path, "bad.toml", '[hardware]\nkind = "cortex-a"\ncores = = 4\n')
    with pytest.raises(TargetError) as e:
        load_target(str(p))
    assert "bad.toml" in str(e.value) and "line 3" in str(e.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('colour = "red"\n', "colour"),
        ('[hardware]\nkind = "cortex-a"\nturbo = true\n', "hardware.turbo"),
        ('[hardware]\nkind = "gpu"\n[runtime]\nengine = "vela"\n', "'gpu'"),
        ('[hardware]\nkind = "cortex-a"\ncores = 0\n[runtime]\nengine = "vela"\n', "cores"),
        ('[hardware]\nkind = "cortex-a"\n[runtime]\nengine = "vela"\n[budgets]\nram_kb = -1\n',
         "ram_kb"),
        ('[hardware]\nkind = "cortex-a"\n[runtime]\nengine = "vela"\n[budgets]\nram_kb = "x"\n',
         "ram_kb"),
        ('[runtime]\nengine = "vela"\n', "kind"),
    ],
)
def test_bad_profiles_name_the_key(tmp_path, text, needle):
    p = _write(tmp_path, "t.toml", text)
    with pytest.raises(TargetError) as e:
        load_target(str(p))
    assert "t.toml" in str(e.value) and needle in str(e.value)


def test_inherit_cycle_is_an_error(tmp_path):
    _write(tmp_path, "a.toml", 'inherit = "b.toml"\n')
    b = _write(tmp_path, "b.toml", 'inherit = "a.toml"\n')
    with pytest.raises(TargetError) as e:
        load_target(str(b))
    assert "cycle" in str(e.value)


def test_targets_command_text_and_json():
    r = CliRunner().invoke(main, ["targets"])
    assert r.exit_code == 0
    for name in SHIPPED:
        assert name in r.output
    r = CliRunner().invoke(main, ["targets", "--json"])
    data = json.loads(r.stdout)
    assert {d["name"] for d in data} >= set(SHIPPED)
    assert all("budgets" in d and "hardware" in d for d in data)
