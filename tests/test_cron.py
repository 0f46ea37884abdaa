"""Cron expressions (runtime/cron.py): what is accepted, and the errors that name it."""
from datetime import timezone

import pytest

from rtmbotd.runtime import cron
from rtmbotd.runtime.cron import CronSyntaxError, parse


@pytest.mark.parametrize("text, why", [
    ("61 * * * *", "'61 * * * *': bad minute field"),
    ("* 24 * * *", "bad hour field"),
    ("* * *", "'* * *': has 3 field(s), needs 5"),
    ("0 * * * * *", "has 6 field(s), needs 5"),        # cronsim's seconds field is not cron's
    ("@reboot", "'@reboot': unknown name"),
    ("0 0 30 2 *", "bad day-of-month field"),
    ("*/0 * * * *", "bad minute field"),
    ("5-1 * * * *", "bad minute field"),
    ("", "has 0 field(s)"),
])
def test_bad_expressions_name_themselves(text, why):
    with pytest.raises(CronSyntaxError, match="cron expression") as info:
        parse(text)
    assert why in str(info.value)


def test_not_text():
    with pytest.raises(CronSyntaxError, match="must be text, got int"):
        parse(5)


@pytest.mark.parametrize("name, fields", [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@WEEKLY", "0 0 * * 0"),
])
def test_nicknames(name, fields):
    assert parse(name).fields == fields
    assert str(parse(name)) == name


def test_names_and_extra_spaces():
    assert parse("  0 9  * * mon-fri ").fields == "0 9 * * mon-fri"


def test_next_after_is_strictly_after():
    every_minute = parse("* * * * *")
    assert every_minute.next_after(120.0, timezone.utc) == 180.0
    assert every_minute.next_after(119.999, timezone.utc) == 120.0


def test_zone_named():
    assert str(cron.zone_named("Europe/Berlin")) == "Europe/Berlin"
    for bad in ("Mars/Olympus", "../../etc/passwd", "Europe/"):
        with pytest.raises(ValueError, match="unknown time zone"):
            cron.zone_named(bad)


def test_system_zone_follows_tz(monkeypatch):
    monkeypatch.setenv("TZ", ":America/New_York")
    assert str(cron.system_zone()) == "America/New_York"
    monkeypatch.setenv("TZ", "Nowhere/Special")
    assert cron.system_zone() is not None       # falls back to /etc/localtime or UTC


@pytest.mark.parametrize("text", ["0 0 L * *", "0 9 15W * *", "0 0 LW * *", "0 9 * * 5#2", "0 9 * * 5L", "0 0 l * *"])
def test_cronsim_extensions_debian_cron_lacks_are_refused(text):
    with pytest.raises(CronSyntaxError, match="L, W and # are not standard cron"):
        parse(text)


def test_names_holding_l_and_w_are_still_names():
    assert parse("0 9 * JUL WED").fields == "0 9 * JUL WED"
    assert parse("0 9 * jul-dec/2 wed,sun").fields == "0 9 * jul-dec/2 wed,sun"


def test_system_zone_from_localtime_is_the_same_zone_at_every_load(monkeypatch):
    monkeypatch.delenv("TZ", raising=False)
    assert cron.system_zone() == cron.system_zone()     # else each reload plans every cron job again


def test_a_huge_list_is_refused_by_its_length_and_shown_cut_short():
    every_minute = ",".join(str(i) for i in range(60))
    assert parse(f"{every_minute} {','.join(map(str, range(24)))} * * *")      # every value listed: fine
    huge = ",".join([every_minute] * 100) + " * * * *"                         # cronsim: ~6 ms per next time, on the loop
    with pytest.raises(CronSyntaxError, match=r"17007 characters, at most 1000") as info:
        parse(huge)
    assert len(str(info.value)) < 200
