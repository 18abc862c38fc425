"""Editing the configuration file while the server runs."""

from __future__ import annotations

import dataclasses
import smtplib
import time

import pytest
import yaml

from sesrx.loader import load_config

from helpers import make_message, rule, rule_set, send, store, stored_messages

pytestmark = pytest.mark.e2e


def wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_edited_rule_set_applies_from_the_next_message(
    write_config, serve, tmp_path, caplog
):
    """A good edit takes over; a broken one is reported and the last good one stays."""
    path = write_config({"rule_set": rule_set(rule("r", store("first")))})
    server = serve(path)
    caplog.set_level("INFO", logger="sesrx.reload")
    buckets = tmp_path / "data" / "s3"

    send(server.port, make_message())
    document = yaml.safe_load(path.read_text())
    document["rule_set"] = rule_set(rule("r", store("second")), name="edited")
    path.write_text(yaml.safe_dump(document))
    assert wait_for(lambda: server.server.config.rule_set.name == "edited")
    send(server.port, make_message())

    good = path.read_text()
    path.write_text(good + "  broken: [\n")
    assert wait_for(lambda: "cannot be used, keeping the running rules" in caplog.text)
    send(server.port, make_message())
    caplog.clear()
    # An integer too long for Python to convert is not a config error to YAML.
    path.write_text("server: {max_message_size: " + "9" * 5000 + "}\nrule_set: {}\n")
    assert wait_for(lambda: "cannot be used" in caplog.text)
    document["rule_set"] = rule_set(rule("r", store("third")), name="after")
    path.write_text(yaml.safe_dump(document))
    assert wait_for(lambda: server.server.config.rule_set.name == "after")

    assert len(stored_messages(buckets / "first")) == 1
    assert len(stored_messages(buckets / "second")) == 2
    assert (buckets / "second" / "AMAZON_SES_SETUP_NOTIFICATION").is_file()


def test_a_reload_mid_transaction_applies_from_the_next_message(
    write_config, serve, tmp_path
):
    """Recipients accepted under one rule set are processed under that rule set."""
    path = write_config({"rule_set": rule_set(rule("r", store("first")))})
    server = serve(path)
    document = yaml.safe_load(path.read_text())
    document["rule_set"] = rule_set(
        rule("r", store("second"), recipients=["other.example"]), name="edited"
    )
    path.write_text(yaml.safe_dump(document))
    edited = dataclasses.replace(
        load_config(path),
        server=server.server.config.server,
        data_dir=tmp_path / "data",
    )

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        assert client.rcpt("bob@example.com")[0] == 250
        server.call(server.server.apply(edited), 10)
        code, _ = client.data(make_message())

    assert code == 250
    assert len(stored_messages(tmp_path / "data" / "s3" / "first")) == 1
