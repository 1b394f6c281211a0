"""`edge-gateway import-dbc` (issue 15): signals of a DBC drafted as a CAN device file that
passes check-config and probes GOOD from the slcan simulator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml

from protocols.can.dbc import describe_dbc
from protocols.can.discovery import device_id_for, draft_from_dbc, select_messages, snake_case
from simulator.can_bus import DEMO_DBC, CanMachine
from simulator.ptypair import pty_pair
from tests.support.site import REPO


@pytest.mark.parametrize(
    ("name", "snake"),
    [("SpeedRpm", "speed_rpm"), ("BearingTempDE", "bearing_temp_de"), ("DC-Link V", "dc_link_v"),
     ("ABSActive", "abs_active"), ("temp2", "temp2"), ("___", "signal")],
)  # fmt: skip
def test_snake_case_names(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def test_messages_are_chosen_by_name_or_frame_id_in_dbc_order() -> None:
    messages = describe_dbc(DEMO_DBC)
    chosen = select_messages(messages, ["0x18ff1001", "MotorData"])
    assert [m.name for m in chosen] == ["MotorData", "BearingTemps"]
    with pytest.raises(ValueError, match="no message `Motor`; it has: MotorData, MotorStatus"):
        select_messages(messages, ["Motor"])


def test_the_draft_lists_every_signal_but_the_multiplexer_switch() -> None:
    draft = draft_from_dbc(
        describe_dbc(DEMO_DBC), dbc_reference="demo_machine.dbc", device_id="motor-1",
        interface="socketcan", channel="can0", bitrate=None, command="import-dbc x",
    )  # fmt: skip
    document = yaml.safe_load(draft.text)
    signals = {s["name"]: (s["message"], s["signal"]) for s in document["signals"]}
    assert signals == {
        "speed_rpm": ("MotorData", "SpeedRpm"),
        "current_a": ("MotorData", "CurrentA"),
        "winding_temp": ("MotorData", "WindingTemp"),
        "dc_link_voltage": ("MotorData", "DcLinkVoltage"),
        "state": ("MotorStatus", "State"),
        "operating_hours": ("MotorStatus", "OperatingHours"),
        "fault_code": ("MotorStatus", "FaultCode"),
        "start_count": ("MotorStatus", "StartCount"),
        "bearing_temp_de": ("BearingTemps", "BearingTempDE"),
        "bearing_temp_nde": ("BearingTemps", "BearingTempNDE"),
    }
    assert document["connection"] == {
        "protocol": "can", "interface": "socketcan", "channel": "can0", "dbc": "demo_machine.dbc"
    }  # fmt: skip
    assert draft.notes == ("The multiplexer switch MotorStatus.StatusPage is not a measurement;"
                           " left out.",)  # fmt: skip
    # What the DBC says travels as comments: units, scaling, cycle, labels.
    assert "# rpm; x0.5 +0; 0..32767.5" in draft.text
    assert "every 100 ms" in draft.text
    assert "labels 0 Stopped, 1 Running, 2 Fault, 3 Maintenance" in draft.text


def test_a_signal_name_two_messages_share_gets_its_message_as_prefix(tmp_path: Path) -> None:
    dbc = tmp_path / "two.dbc"
    dbc.write_text(
        'VERSION ""\n\nNS_ :\n\nBS_:\n\nBU_: A\n\n'
        'BO_ 16 Front: 2 A\n SG_ Temp : 0|16@1+ (1,0) [0|0] "degC" Vector__XXX\n\n'
        'BO_ 17 Rear: 2 A\n SG_ Temp : 0|16@1+ (1,0) [0|0] "degC" Vector__XXX\n\n'
    )
    draft = draft_from_dbc(
        describe_dbc(dbc), dbc_reference="two.dbc", device_id="x", interface="virtual",
        channel="c", bitrate=None, command="c",
    )  # fmt: skip
    assert [s["name"] for s in yaml.safe_load(draft.text)["signals"]] == [
        "front_temp", "rear_temp"
    ]  # fmt: skip
    assert device_id_for(dbc) == "two" and device_id_for(Path("1 bus.dbc")) == "1-bus"


async def cli(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_import_check_and_probe_round_trip_over_slcan(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "devices").mkdir(parents=True)
    (site / "gateway.yaml").write_text("site: s\ngateway_id: g\n")
    dbc = site / "devices" / "drive.dbc"
    dbc.write_bytes(DEMO_DBC.read_bytes())
    draft = site / "devices" / "drive.yaml"
    stop = asyncio.Event()
    async with (
        pty_pair(tmp_path / "plant", tmp_path / "gw") as pair,
        CanMachine(str(pair.plant_end), interface="slcan") as machine,
    ):
        code, out, err = await cli(
            "import-dbc", str(dbc), "--message", "MotorData", "--message", "MotorStatus",
            "--interface", "slcan", "--channel", str(pair.gateway_end), "--bitrate", "500000",
            "--id", "drive", "--output", str(draft),
        )  # fmt: skip
        assert (code, out) == (0, ""), err
        assert "dbc: drive.dbc" in draft.read_text()  # relative to the draft: the site moves
        code, out, err = await cli("check-config", str(draft))
        assert code == 0, err
        assert out.startswith("OK: 1 device, 8 tags, 0 rules in") and "checked with the site" in out
        runner = asyncio.create_task(machine.run(stop), name="can-machine")
        try:
            code, out, _ = await cli("probe", str(draft), "--json")
        finally:
            stop.set()
            await runner
    assert code == 0, out
    points = {p["name"]: p for p in json.loads(out)["points"]}
    assert {p["quality"] for p in points.values()} == {"GOOD"}
    assert points["speed_rpm"]["value"] == 1480.0 and points["speed_rpm"]["unit"] == "rpm"
    assert points["state"]["label"] == "Running"


async def test_a_missing_or_broken_dbc_and_an_unknown_message(tmp_path: Path) -> None:
    code, _, err = await cli("import-dbc", str(tmp_path / "none.dbc"))
    assert code == 66 and "not found" in err
    broken = tmp_path / "broken.dbc"
    broken.write_text("VERSION \"\"\nBO_ 256 X: 8 A\n SG_ Y : nonsense\n")
    code, _, err = await cli("import-dbc", str(broken))
    assert code == 65 and "DBC file does not parse" in err
    code, _, err = await cli("import-dbc", str(DEMO_DBC), "--message", "Nope")
    assert code == 64 and "has no message `Nope`" in err


async def test_to_standard_output_the_dbc_is_named_absolute() -> None:
    code, out, _ = await cli("import-dbc", str(DEMO_DBC), "--message", "BearingTemps")
    assert code == 0
    assert yaml.safe_load(out)["connection"]["dbc"] == str(DEMO_DBC.resolve())
