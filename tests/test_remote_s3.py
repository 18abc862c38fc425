"""Buckets on an S3-compatible store: moto's server, over real HTTP and SMTP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sesrx.config import RemoteBucket
from sesrx.errors import ConfigError, ObjectNotFoundError, StorageError
from sesrx.loader import load_config
from sesrx.pipeline import REPLY_RETRY
from sesrx.remote_s3 import RemoteClients
from sesrx.setup_notice import SETUP_KEY
from sesrx.testing import Sesrx

from helpers import make_message, read_trace, rule, rule_set, send, store

CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test"}
# A down endpoint answers within this many seconds (one retry, no waiting).
DOWN_SECONDS = 5.0


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """Run moto's S3 server on a free loopback port for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3(endpoint: str) -> Any:
    """Return a boto3 client of the moto server, as a test would read it."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    """Create a bucket of a name no other test uses, and return its name."""
    name = f"remote-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def remote(endpoint: str, *names: str, **fields: Any) -> dict[str, Any]:
    """Return a ``buckets`` mapping putting ``names`` on ``endpoint``."""
    return {name: {"endpoint_url": endpoint, **CREDENTIALS, **fields} for name in names}


def read(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def only_trace(data_dir: Path) -> dict[str, Any]:
    """Return the one trace in ``data_dir`` (a 451 reply names no message id)."""
    [path] = (data_dir / "traces").glob("*.json")
    return read_trace(data_dir, path.stem)


def test_remote_bucket_gets_the_bytes_a_local_folder_gets(
    write_config, serve, tmp_path, endpoint, s3, bucket
):
    """An S3 action on a remote bucket puts what the local folder stores, same key."""
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(
                rule(
                    "both",
                    store(bucket, object_key_prefix="mail"),
                    store("local-copy", object_key_prefix="mail"),
                )
            ),
        }
    )
    server = serve(config)
    message = make_message(body="Bytes as sent.\r\n.leading dot\r\n\xe9t\xe9")

    sent = send(server.port, message)
    key = f"mail/{sent.message_id}"
    stored = read(s3, bucket, key)

    local = tmp_path / "data" / "s3" / "local-copy" / "mail" / sent.message_id
    assert stored == local.read_bytes()
    # SES's header lines on top of the received bytes, which are unchanged.
    ses_block = stored.removesuffix(message)
    assert ses_block.startswith(b"Return-Path: <alice@sender.example>\r\nReceived: ")
    assert ses_block.endswith(b"\r\n")
    assert b"\r\n\r\n" not in ses_block
    assert ses_block + message == stored
    assert not (tmp_path / "data" / "s3" / bucket).exists()


def test_trace_names_the_endpoint_not_a_path(
    write_config, serve, tmp_path, endpoint, bucket
):
    """The trace of a remote S3 action records endpoint_url and no local path."""
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(rule("r", store(bucket))),
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    [action] = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"]

    assert action["outcome"] == "ok"
    assert action["detail"] == {
        "bucket_name": bucket,
        "object_key": sent.message_id,
        "endpoint_url": endpoint,
    }


def test_setup_notification_lands_in_the_remote_bucket(
    write_config, serve, endpoint, s3, bucket
):
    """Starting the server writes AMAZON_SES_SETUP_NOTIFICATION under the prefix."""
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(rule("r", store(bucket, object_key_prefix="in/"))),
        }
    )

    serve(config)

    notice = read(s3, bucket, f"in/{SETUP_KEY}")
    assert b"Subject: Amazon SES Setup Notification\r\n" in notice
    assert f"write email to the bucket {bucket}.".encode() in notice


def test_reload_writes_the_setup_notification_to_a_bucket_made_remote(
    write_config, serve, tmp_path, endpoint, s3, bucket
):
    """A configuration applied while running writes its remote setup objects."""
    document = {"rule_set": rule_set(rule("r", store(bucket)))}
    server = serve(write_config(document))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    fresh = load_config(write_config({**document, "buckets": remote(endpoint, bucket)}))
    server.call(server.server.apply(fresh), timeout=10)

    assert read(s3, bucket, SETUP_KEY).startswith(b"From: sesrx <")
    sent = send(server.port, make_message())
    assert read(s3, bucket, sent.message_id).endswith(make_message())


def test_store_reads_back_remote_and_local_objects(
    write_config, serve, endpoint, bucket
):
    """get_object and list_keys give the same answers for either kind of bucket."""
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(
                rule("r", store(bucket, object_key_prefix="m"), store("local-box"))
            ),
        }
    )
    server = serve(config)
    sent = send(server.port, make_message())
    store_ = server.server.buckets

    remote_keys = asyncio.run(store_.list_keys(bucket))
    local_keys = asyncio.run(store_.list_keys("local-box"))
    remote_object = asyncio.run(store_.get_object(bucket, f"m/{sent.message_id}"))
    local_object = asyncio.run(store_.get_object("local-box", sent.message_id))

    # Sorted as S3 lists: the id may sort before or after AMAZON_SES_...
    assert remote_keys == sorted([f"m/{SETUP_KEY}", f"m/{sent.message_id}"])
    assert local_keys == sorted([SETUP_KEY, sent.message_id])
    assert asyncio.run(store_.list_keys(bucket, prefix=f"m/{SETUP_KEY[:6]}")) == [
        f"m/{SETUP_KEY}"
    ]
    assert remote_object == local_object
    assert remote_object.endswith(make_message())


@pytest.mark.parametrize("where", ["remote", "local"])
def test_reading_a_missing_object_raises_object_not_found(
    write_config, serve, endpoint, bucket, where
):
    """A key that was never stored is ObjectNotFoundError, not a storage failure."""
    name = bucket if where == "remote" else "local-box"
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(rule("r", store(name))),
        }
    )
    buckets = serve(config).server.buckets

    with pytest.raises(ObjectNotFoundError):
        asyncio.run(buckets.get_object(name, "no/such/key"))


def test_down_endpoint_answers_451_quickly_and_traces_the_error(
    write_config, serve, tmp_path, closed_port, caplog
):
    """A store nobody answers for gets the sender 451 4.3.0 within seconds."""
    down = f"http://127.0.0.1:{closed_port}"
    config = write_config(
        {
            "buckets": remote(down, "inbound"),
            "rule_set": rule_set(rule("r", store("inbound"), store("local-box"))),
        }
    )
    started = time.monotonic()
    server = serve(config)

    sent = send(server.port, make_message())
    elapsed = time.monotonic() - started
    trace = only_trace(tmp_path / "data")

    assert sent.data == (451, REPLY_RETRY.removeprefix("451 "))
    assert "4.3.0" in sent.data[1]
    assert elapsed < DOWN_SECONDS
    assert (
        f"cannot write s3://inbound/{trace['message_id']} at {down}" in (trace["error"])
    )
    first, second = trace["rules"][0]["actions"]
    assert (first["outcome"], second["outcome"]) == ("error", "not reached")
    assert "Could not connect" in first["error"]
    assert any(
        record.levelno == logging.WARNING and "setup notification" in record.message
        for record in caplog.records
    )


def test_down_endpoint_reads_raise_storage_error(write_config, serve, closed_port):
    """Reading back from a store that is down is a StorageError, not a miss."""
    config = write_config(
        {
            "buckets": remote(f"http://127.0.0.1:{closed_port}", "inbound"),
            "rule_set": rule_set(rule("r", store("inbound"))),
        }
    )
    buckets = serve(config).server.buckets

    with pytest.raises(StorageError, match="cannot list s3://inbound/"):
        asyncio.run(buckets.list_keys("inbound"))


def test_missing_remote_bucket_answers_451(write_config, serve, tmp_path, endpoint):
    """A bucket the store does not have gets 451; the server still starts."""
    absent = f"absent-{uuid.uuid4().hex[:12]}"
    config = write_config(
        {
            "buckets": remote(endpoint, absent),
            "rule_set": rule_set(rule("r", store(absent))),
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())

    assert sent.code == 451
    assert "4.3.0" in sent.data[1]
    assert "NoSuchBucket" in only_trace(tmp_path / "data")["error"]


@pytest.mark.parametrize(
    ("entry", "key_path", "words"),
    [
        (
            {"endpoint_url": "ftp://localhost:9000"},
            "buckets.inbound.endpoint_url",
            "expected an http:// or https:// URL",
        ),
        (
            {"endpoint_url": "http://localhost:70000"},
            "buckets.inbound.endpoint_url",
            "expected an http:// or https:// URL",
        ),
        (
            {"endpoint_url": "http://localhost:9000", "bucket": "x"},
            "buckets.inbound.bucket",
            "unknown key",
        ),
        (
            {"endpoint_url": "http://localhost:9000", "access_key_id": "test"},
            "buckets.inbound.secret_access_key",
            "required with access_key_id",
        ),
        (
            {"endpoint_url": "http://localhost:9000", "secret_access_key": "test"},
            "buckets.inbound.access_key_id",
            "required with secret_access_key",
        ),
        ({"region": "us-east-1"}, "buckets.inbound.endpoint_url", "required"),
        (
            {"endpoint_url": "http://localhost:9000", "region": "us east"},
            "buckets.inbound.region",
            "expected a region",
        ),
    ],
)
def test_bucket_config_errors_name_the_key(write_config, entry, key_path, words):
    """A bad buckets: entry is a config error naming its key path."""
    path = write_config({"buckets": {"inbound": entry}, "rule_set": rule_set()})

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key_path == key_path
    assert words in caught.value.problem


def test_bucket_names_follow_s3_rules(write_config):
    """A buckets: key that S3 would refuse as a name is a config error."""
    path = write_config(
        {"buckets": remote("http://localhost:9000", "Bad_Name"), "rule_set": rule_set()}
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key_path == "buckets.Bad_Name"


def test_without_boto3_a_remote_bucket_is_a_config_error(write_config, monkeypatch):
    """Naming a remote bucket without boto3 installed says how to install it."""
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now fails
    path = write_config(
        {"buckets": remote("http://localhost:9000", "inbound"), "rule_set": rule_set()}
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key_path == "buckets.inbound"
    assert "pip install 'sesrx[s3]'" in caught.value.problem


def test_remote_bucket_defaults_to_the_aws_region(write_config):
    """region is aws.region unless given; the secret stays out of repr."""
    path = write_config(
        {
            "aws": {"region": "eu-west-1"},
            "buckets": remote("http://localhost:9000", "inbound"),
            "rule_set": rule_set(),
        }
    )

    bucket = load_config(path).buckets["inbound"]

    assert (bucket.region, bucket.access_key_id) == ("eu-west-1", "test")
    assert "secret_access_key" not in repr(bucket)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sesrx", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_shows_where_buckets_live(write_config):
    """check-config lists remote buckets and warns about one no action uses."""
    path = write_config(
        {
            "buckets": remote("http://localhost:9000", "inbound", "spare"),
            "rule_set": rule_set(rule("r", store("inbound"), store("local-box"))),
        }
    )

    result = check_config(path)

    assert result.returncode == 0, result.stderr
    assert "buckets:     inbound at http://localhost:9000 (us-east-1)" in (
        result.stdout
    )
    assert "S3 s3://inbound/<messageId> at http://localhost:9000" in result.stdout
    assert "S3 s3://local-box/<messageId>\n" in result.stdout
    assert "warning: buckets.spare: no S3 action writes to this bucket" in (
        result.stdout
    )


def test_check_config_exits_2_on_a_bad_endpoint(write_config):
    """A bad endpoint_url is reported like every config error: key path, exit 2."""
    path = write_config(
        {"buckets": remote("localhost:9000", "inbound"), "rule_set": rule_set()}
    )

    result = check_config(path)

    assert result.returncode == 2
    assert (
        f"{path}: buckets.inbound.endpoint_url: expected an http:// or https:// URL"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_concurrent_messages_to_a_remote_bucket_are_all_stored(
    write_config, serve, endpoint, bucket
):
    """Messages sent at once to a remote bucket are each stored, none lost."""
    config = write_config(
        {
            "buckets": remote(endpoint, bucket),
            "rule_set": rule_set(rule("r", store(bucket))),
        }
    )
    server = serve(config)

    async def send_all() -> list[Any]:
        return await asyncio.gather(
            *(
                asyncio.to_thread(send, server.port, make_message(subject=f"n{i}"))
                for i in range(8)
            )
        )

    ids = {sent.message_id for sent in asyncio.run(send_all())}
    keys = asyncio.run(server.server.buckets.list_keys(bucket))

    assert len(ids) == 8
    assert sorted(keys) == sorted({SETUP_KEY, *ids})


def test_buckets_on_one_endpoint_share_a_client():
    """One boto3 client serves every bucket with the same endpoint and keys."""
    clients = RemoteClients()
    first = RemoteBucket("one", "http://127.0.0.1:9", "us-east-1", "a", "b")
    second = RemoteBucket("two", "http://127.0.0.1:9", "us-east-1", "a", "b")
    other_keys = RemoteBucket("one", "http://127.0.0.1:9", "us-east-1", "a", "c")

    assert clients.client(first) is clients.client(second)
    assert clients.client(first) is not clients.client(other_keys)


def test_api_and_plugin_read_a_remote_bucket(endpoint, s3, bucket, tmp_path):
    """The API's raw and the test helper's objects() read from the store."""
    config = {
        "buckets": remote(endpoint, bucket),
        "rule_set": rule_set(rule("all", store(bucket, object_key_prefix="in"))),
    }
    with Sesrx(config, data_dir=tmp_path / "data") as server:
        reply = server.send(make_message(), to="bob@example.com")
        (message,) = server.wait_for("bob@example.com")
        key = f"in/{reply.message_id}"

        assert server.objects(bucket) == {key: read(s3, bucket, key)}
        assert message.raw == read(s3, bucket, key)
        url = f"{server.api_url}/api/messages/{message.id}/raw"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["X-Sesrx-Object"] == f"s3://{bucket}/{key}"
            assert response.read() == read(s3, bucket, key)
        detail_url = f"{server.api_url}/api/messages/{message.id}"
        with urllib.request.urlopen(detail_url, timeout=10) as response:
            action = json.loads(response.read())["trace"]["rules"][0]["actions"][0]
        assert action["detail"]["endpoint_url"] == endpoint
    assert not (tmp_path / "data" / "s3" / bucket).exists()
