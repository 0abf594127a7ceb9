"""Tests of svrt.instruments and `svrt instruments`: Table 1, user files, errors, the CLI."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from svrt.cli import cli, main
from svrt.errors import SvrtError
from svrt.instruments import (
    ARCSEC_PER_RADIAN,
    Instrument,
    conditioning_size,
    get_instrument,
    load_instruments,
)

# Table 1 of the paper: label -> (one-hot index, D cm, D2 cm, pixel arcsec, lambda A)
TABLE1 = {
    "crisp6302": (0, 100.0, 0.0, 0.059, 6302.0),
    "crisp8542": (1, 100.0, 0.0, 0.059, 8542.0),
    "chromis3934": (2, 100.0, 0.0, 0.038, 3934.0),
    "hifi6563": (3, 144.0, 40.0, 0.050, 6563.0),
}
# lambda/(D pix), as `svrt instruments` prints it (3 decimals): 206264.8 * lambda / D / pix
SAMPLING = {"crisp6302": 2.203, "crisp8542": 2.986, "chromis3934": 2.135, "hifi6563": 1.880}

NEW = {"label": "dkist3934", "telescope": "DKIST", "instrument": "VBI", "index": 4, "diameter_cm": 400.0,
       "obscuration_cm": 0.0, "pixel_arcsec": 0.011, "wavelength_angstrom": 3934.0}


@pytest.fixture(autouse=True)
def no_user_file(monkeypatch):
    monkeypatch.delenv("SVRT_INSTRUMENTS", raising=False)


def write(tmp_path, content, name="mine.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_table1_entries():
    reg = load_instruments()
    assert list(reg) == list(TABLE1)
    for label, (index, d, d2, pix, lam) in TABLE1.items():
        inst = reg[label]
        assert (inst.index, inst.diameter_cm, inst.obscuration_cm, inst.pixel_arcsec, inst.wavelength_angstrom) == (
            index,
            d,
            d2,
            pix,
            lam,
        )
        assert inst.diffraction_arcsec == pytest.approx(lam * 1e-10 / (d / 100) * 180 / math.pi * 3600, rel=1e-12)
        assert round(inst.sampling, 3) == SAMPLING[label]
        assert inst.cutoff_cycles_per_pixel == pytest.approx(1 / inst.sampling, rel=1e-12)
    assert reg["hifi6563"].sampling < 2 <= min(reg[k].sampling for k in ("crisp6302", "crisp8542", "chromis3934"))
    assert (reg["hifi6563"].telescope, reg["hifi6563"].instrument) == ("GREGOR", "HiFI")
    assert ARCSEC_PER_RADIAN == pytest.approx(206264.806, abs=1e-3)
    assert conditioning_size() == 4


def test_get_instrument_case_insensitive_and_passthrough():
    assert get_instrument("CRISP8542") is not None and get_instrument("CRISP8542").label == "crisp8542"
    inst = Instrument(**NEW)
    assert get_instrument(inst) is inst


def test_unknown_instrument_lists_the_known_ones():
    with pytest.raises(SvrtError) as err:
        get_instrument("crisp6563")
    msg = str(err.value)
    assert "crisp6563" in msg and "SVRT_INSTRUMENTS" in msg
    for label in TABLE1:
        assert label in msg


def test_user_file_adds_and_replaces(tmp_path, monkeypatch):
    replaced = {**NEW, "label": "crisp8542", "index": 1, "pixel_arcsec": 0.044, "diameter_cm": 100.0,
                "telescope": "SST", "instrument": "CRISP", "wavelength_angstrom": 8542.0}
    path = write(tmp_path, {"instruments": [NEW, replaced]})
    monkeypatch.setenv("SVRT_INSTRUMENTS", str(path))
    reg = load_instruments()
    assert list(reg) == list(TABLE1) + ["dkist3934"]
    dkist = get_instrument("DKIST3934")
    assert dkist.sampling == pytest.approx(3934e-10 / 4.0 * ARCSEC_PER_RADIAN / 0.011)
    assert get_instrument("crisp8542").pixel_arcsec == 0.044
    assert conditioning_size() == 5
    # an explicit path works without the environment too
    monkeypatch.delenv("SVRT_INSTRUMENTS")
    assert "dkist3934" in load_instruments(path)
    assert "dkist3934" not in load_instruments()


def test_spider_fields_accepted(tmp_path):
    path = write(tmp_path, {"instruments": [{**NEW, "spider_count": 4, "spider_width_cm": 2.5}]})
    inst = load_instruments(path)["dkist3934"]
    assert (inst.spider_count, inst.spider_width_cm) == (4, 2.5)


BAD = {
    "invalid_json": "{instruments: [",
    "not_an_object": json.dumps([NEW]),
    "no_instruments_key": json.dumps({"telescopes": [NEW]}),
    "instruments_not_list": json.dumps({"instruments": NEW}),
    "entry_not_object": json.dumps({"instruments": ["dkist"]}),
    "missing_key": json.dumps({"instruments": [{k: v for k, v in NEW.items() if k != "pixel_arcsec"}]}),
    "unknown_key": json.dumps({"instruments": [{**NEW, "focal_length": 3}]}),
    "obscuration_too_large": json.dumps({"instruments": [{**NEW, "obscuration_cm": 400.0}]}),
    "negative_pixel": json.dumps({"instruments": [{**NEW, "pixel_arcsec": -0.01}]}),
    "zero_diameter": json.dumps({"instruments": [{**NEW, "diameter_cm": 0}]}),
    "string_diameter": json.dumps({"instruments": [{**NEW, "diameter_cm": "400"}]}),
    "null_index": json.dumps({"instruments": [{**NEW, "index": None}]}),
    "negative_index": json.dumps({"instruments": [{**NEW, "index": -1}]}),
    "float_index": json.dumps({"instruments": [{**NEW, "index": 1.5}]}),
    "numeric_label": json.dumps({"instruments": [{**NEW, "label": 7}]}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_svrt_error(tmp_path, monkeypatch, case):
    path = write(tmp_path, BAD[case])
    with pytest.raises(SvrtError) as err:
        load_instruments(path)
    assert str(path) in str(err.value)
    monkeypatch.setenv("SVRT_INSTRUMENTS", str(path))
    with pytest.raises(SvrtError):
        get_instrument("crisp8542")


def test_unreadable_files_give_svrt_error(tmp_path):
    with pytest.raises(SvrtError, match="not found"):
        load_instruments(tmp_path / "missing.json")
    with pytest.raises(SvrtError):
        load_instruments(tmp_path)                      # a folder
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(SvrtError):
        load_instruments(binary)


def test_cli_instruments_table():
    result = CliRunner().invoke(cli, ["instruments"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "l/(D pix)" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(rows) == set(TABLE1)
    for label, line in rows.items():
        fields = line.split()
        assert fields[9] == f"{SAMPLING[label]:.3f}"
        assert float(fields[4]) == TABLE1[label][1] and float(fields[5]) == TABLE1[label][2]
        assert ("below Nyquist" in line) == (label == "hifi6563")


def test_cli_instruments_json_and_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SVRT_INSTRUMENTS", str(write(tmp_path, {"instruments": [NEW]})))
    result = CliRunner().invoke(cli, ["instruments", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == set(TABLE1) | {"dkist3934"}
    assert round(data["crisp8542"]["sampling"], 3) == 2.986
    assert data["dkist3934"]["diameter_cm"] == 400.0


def test_cli_bad_user_file_is_one_sentence(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, BAD["missing_key"])
    monkeypatch.setenv("SVRT_INSTRUMENTS", str(path))
    with pytest.raises(SystemExit) as exit_:
        main(["instruments"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("svrt: error: ") and "pixel_arcsec" in err and "Traceback" not in err


def test_index_is_the_position_in_the_default_conditioning():
    from svrt.emulator import EmulatorConfig
    from svrt.instruments import builtin_instruments, default_conditioning

    order = default_conditioning()
    assert [builtin_instruments()[label].index for label in order] == list(range(len(order)))
    assert EmulatorConfig().instruments == order
