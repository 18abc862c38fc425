"""Where objects go on disk: safe, distinct paths for any S3 key."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesrx.errors import ObjectNotFoundError
from sesrx.storage import DataDir, key_to_relative_path, relative_path_to_key

keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
) | st.lists(st.sampled_from(["", ".", "..", "a", "%2F", "%", "b/c"]), max_size=6).map(
    "/".join
)


@given(keys)
def test_every_key_stays_inside_its_bucket(key):
    """No key, however odd, maps outside the bucket folder."""
    bucket = Path("/data/s3/bucket")
    path = bucket / key_to_relative_path(key)

    assert ".." not in path.parts
    assert Path(*path.parts).is_relative_to(bucket)


@given(keys, keys)
def test_distinct_keys_get_distinct_paths(first, second):
    """Two different keys never share a file."""
    if first != second:
        assert key_to_relative_path(first) != key_to_relative_path(second)


@given(keys)
def test_a_stored_path_gives_back_its_key(key):
    """Reading a bucket folder back yields exactly the keys that were stored."""
    assert relative_path_to_key(key_to_relative_path(key)) == key


def test_plain_keys_map_to_plain_paths():
    """Ordinary keys are stored under the names one expects."""
    assert key_to_relative_path("mail/abc") == Path("mail/abc")
    assert key_to_relative_path("a b+c=d") == Path("a b+c=d")
    assert key_to_relative_path("\u65e5\u672c/x") == Path("\u65e5\u672c/x")
    assert key_to_relative_path("50%\\off") == Path("50%25%5Coff")
    assert key_to_relative_path("/emails/x") == Path("%2F/emails/x")


def test_object_path_refuses_nothing_ordinary(tmp_path):
    """object_path resolves ordinary keys below the bucket."""
    data = DataDir(tmp_path)

    assert (
        data.object_path("inbound", "mail/id")
        == tmp_path / "s3" / "inbound" / "mail" / "id"
    )


def test_rename_across_file_systems_falls_back_to_the_target_folder(
    tmp_path, monkeypatch
):
    """When .tmp and the bucket are on different file systems the write still lands."""
    real_replace = os.replace
    calls = []

    def replace(source, target):
        calls.append(Path(source).parent)
        if Path(source).parent.name == ".tmp":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    data = DataDir(tmp_path)
    data.prepare()

    path = asyncio.run(data.put_object("inbound", "mail/id", [b"one", b"two"]))

    assert path.read_bytes() == b"onetwo"
    assert calls == [tmp_path / ".tmp", tmp_path / "s3" / "inbound" / "mail"]
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["id"]


def test_list_keys_reads_odd_keys_back_in_order_and_skips_partial_files(tmp_path):
    """A local bucket lists its keys sorted, as S3 does, without files in flight."""
    data = DataDir(tmp_path)
    data.prepare()
    stored = ["b/1", "a//x", "../up", "50%\\off", "c/"]
    for key in stored:
        asyncio.run(data.put_object("inbound", key, [key.encode()]))
    (data.object_path("inbound", "b/1").parent / f".{'0' * 32}.part").write_bytes(b"")

    assert asyncio.run(data.list_keys("inbound")) == sorted(stored)
    assert asyncio.run(data.list_keys("inbound", prefix="a/")) == ["a//x"]
    assert asyncio.run(data.get_object("inbound", "../up")) == b"../up"
    assert asyncio.run(data.list_keys("never-written")) == []


def test_get_object_of_a_missing_key_is_object_not_found(tmp_path):
    """Reading a key that was never stored raises ObjectNotFoundError."""
    data = DataDir(tmp_path)
    asyncio.run(data.put_object("inbound", "mail/one", [b"x"]))

    with pytest.raises(ObjectNotFoundError):
        asyncio.run(data.get_object("inbound", "mail/two"))
    with pytest.raises(ObjectNotFoundError):
        asyncio.run(data.get_object("inbound", "mail"))  # a folder, not an object
