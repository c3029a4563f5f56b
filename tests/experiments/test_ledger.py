"""The ledger writer's pure parts: the URL it connects with, its log, and what counts as lost."""

from __future__ import annotations

import pytest

from r3e_testbed.experiments.ledger import libpq_url, missing, read_log


def test_sqlalchemy_url_becomes_libpq_url():
    assert (
        libpq_url("postgresql+psycopg2://a:b@127.0.0.1:15432/airflow")
        == "postgresql://a:b@127.0.0.1:15432/airflow"
    )
    assert libpq_url("postgresql://h/db") == "postgresql://h/db"


@pytest.mark.parametrize("url", ["mysql://h/db", "127.0.0.1:5432", ""])
def test_other_urls_are_refused_by_name(url):
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        libpq_url(url)


def test_log_gives_acknowledged_numbers_and_outages():
    log = read_log(["ack 1", "ack 2", "down 100.0", "ack 3", "up 104.5", "ack 4", "down 200", ""])
    assert log.acknowledged == (1, 2, 3, 4)
    assert log.outages == ((100.0, 104.5), (200.0, None))
    assert log.longest_outage_s == pytest.approx(4.5)


def test_a_log_line_it_does_not_know_is_an_error_naming_the_line():
    with pytest.raises(ValueError, match="line 2"):
        read_log(["ack 1", "acked 2"])


def test_missing_numbers_are_the_lost_commits():
    assert missing([1, 2, 3, 4], [1, 2, 4, 5]) == [3]
    assert missing([1, 2], [1, 2]) == []
