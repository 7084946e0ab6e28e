"""Measured training rates: recorded per preset, read back, unreadable files and entries ignored."""

import json

from catneuron.store import rates


def rate(preset: str = "paper", images_per_s: float = 5.0) -> rates.Rate:
    return rates.Rate(preset, images_per_s, 100, 3, 2, "Test CPU", "float32", "2026-12-03")


def test_record_keeps_the_last_rate_of_each_preset(tmp_path):
    path = tmp_path / "sub" / "rates.json"
    rates.record(rate("paper", 4.0), path)
    rates.record(rate("small", 3000.0), path)
    rates.record(rate("paper", 6.0), path)
    assert rates.last("paper", path) == rate("paper", 6.0)
    assert rates.last("small", path).images_per_s == 3000.0
    assert rates.last("tiny", path) is None


def test_the_file_lives_in_the_user_cache_unless_named(monkeypatch, tmp_path):
    monkeypatch.delenv("CATNEURON_RATES", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert rates.rates_path() == tmp_path / "catneuron" / "rates.json"
    monkeypatch.setenv("CATNEURON_RATES", str(tmp_path / "mine.json"))
    assert rates.rates_path() == tmp_path / "mine.json"


def test_unreadable_files_and_entries_give_no_rate(tmp_path):
    path = tmp_path / "rates.json"
    assert rates.last("paper", path) is None  # missing
    path.write_text("{not json")
    assert rates.last("paper", path) is None
    path.write_text(json.dumps({"paper": {"images_per_s": 5.0}}))  # fields missing
    assert rates.last("paper", path) is None
    path.write_text(json.dumps({"paper": rates.asdict(rate(images_per_s=-1.0))}))
    assert rates.last("paper", path) is None
    rates.record(rate(), path)  # a broken file is replaced, not fatal
    assert rates.last("paper", path) == rate()


def test_duration_reads_in_hours_or_days():
    assert rates.duration(36_000, rate(images_per_s=5.0)) == "2.0 hours"
    assert rates.duration(10_000_000, rate(images_per_s=5.0)) == "23.1 days"
