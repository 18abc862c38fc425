"""Where objects go on disk: safe, distinct paths for any S3 key."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sesrx.storage import DataDir, key_to_relative_path

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


def test_plain_keys_map_to_plain_paths():
    """Ordinary keys are stored under the names one expects."""
    assert key_to_relative_path("mail/abc") == Path("mail/abc")
    assert key_to_relative_path("a b+c=d") == Path("a b+c=d")
    assert key_to_relative_path("/emails/x") == Path("%2F/emails/x")


def test_object_path_refuses_nothing_ordinary(tmp_path):
    """object_path resolves ordinary keys below the bucket."""
    data = DataDir(tmp_path)

    assert (
        data.object_path("inbound", "mail/id")
        == tmp_path / "s3" / "inbound" / "mail" / "id"
    )
