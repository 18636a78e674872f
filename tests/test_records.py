"""What qlua keeps per translation (records=): bounded under endless retranslation."""

import pytest

from qemu_run import fields, guest, qemu, script


def records_run(rounds, limit):
    r = qemu(["script=" + script("records.lua"), "records=" + limit], [guest("smc"), str(rounds)],
             oracle=True)
    assert r.status == 0 and f"smc {rounds} {rounds * (rounds - 1) // 2}" in r.out, f"guest\n{r}"
    m = {k: int(v) for k, v in fields(r.log, "records").items()}
    assert m["insns"] == int(fields(r.log, "oracle")["insns"]), (
        f"callbacks lost across flushes\n{r}")
    assert m["translations"] > rounds, f"the guest retranslates every round\n{r}"
    return r, m


def test_memory_stays_flat_under_endless_retranslation():
    small, large = 30000, 120000
    # control: without a limit, what qlua holds grows with the translations (the guest works)
    _, off_s = records_run(small, "off")
    _, off_l = records_run(large, "off")
    assert off_l["limit_flushes"] == 0 and off_l["peak"] > 3 * off_s["peak"], (
        f"records grow without a limit: {off_s['peak']} -> {off_l['peak']}")
    assert off_l["lua"] - off_s["lua"] > 10 << 20, "Lua heap grows without a limit"
    # records=1M: qlua flushes translations whenever its records reach 1 MiB
    r_s, on_s = records_run(small, "1M")
    r_l, on_l = records_run(large, "1M")
    assert on_l["limit"] == 1 << 20, f"records=1M read\n{r_l}"
    assert on_l["limit_flushes"] >= 4 and on_l["flushes"] >= on_l["limit_flushes"], (
        f"flushes asked for\n{r_l}")
    assert on_s["peak"] <= 2 << 20 and on_l["peak"] <= 2 << 20, f"records peak bounded\n{r_l}"
    assert on_l["lua"] - on_s["lua"] < 4 << 20 and on_l["lua"] < 8 << 20, (
        f"Lua heap flat: {on_s['lua']} -> {on_l['lua']}\n{r_l}")


@pytest.mark.exits_qemu
def test_bad_records_option_is_refused_with_the_accepted_form():
    for bad in ("lots", "12X", "0", "-5M"):
        r = qemu(["script=count", "records=" + bad], [guest("loop"), "1"])
        assert r.status == 1 and f"records={bad}: expected a size such as 64M" in r.err, (
            f"{bad}\n{r}")
    r = qemu(["script=count", "records=64K"], [guest("loop"), "1"])
    assert r.status == 1 and "records=64K: at least 1M (or off)" in r.err, f"too small a limit\n{r}"
