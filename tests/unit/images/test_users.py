"""An image's User resolved against its passwd and group texts (pure)."""

from __future__ import annotations

import pytest

from agent.images.users import parse_ids

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:1001:\n"


@pytest.mark.parametrize(
    ("user", "want"),
    [("", (0, 0)), ("app", (1000, 1001)), ("app:staff", (1000, 50)), ("1000", (1000, 1001)),
     ("1234", (1234, 0)), ("1234:7", (1234, 7)), ("root:app", (0, 1001))],
)  # fmt: skip
def test_parse_ids(user: str, want: tuple[int, int]) -> None:
    assert parse_ids(user, passwd=PASSWD, group=GROUP) == want


@pytest.mark.parametrize(("user", "words"), [("bob", "user 'bob'"), ("app:wheel", "group 'wheel'")])
def test_unknown_names(user: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_ids(user, passwd=PASSWD, group=GROUP)
