"""The Gantryfile parser: every instruction, continuations, and file:line errors."""

from __future__ import annotations

import pytest

from agent.images.errors import BuildError
from agent.images.gantryfile import parse

FULL = """\
# a comment
FROM busybox:latest
ENV A=1 B="two words"
ENV C plain value
WORKDIR /app
COPY --chown=1000:1000 a.txt b/ /app/
RUN echo hi && \\
    echo there
RUN ["/bin/sh", "-c", "true"]
USER app
EXPOSE 8080 9090/udp
LABEL k=v x="y z"
ENTRYPOINT ["/bin/app"]
CMD serve --port 8080
"""


def test_parse_full() -> None:
    ins = parse(FULL, "G")
    assert [i.keyword for i in ins] == [
        "FROM", "ENV", "ENV", "WORKDIR", "COPY", "RUN", "RUN", "USER", "EXPOSE", "LABEL", "ENTRYPOINT", "CMD",
    ]  # fmt: skip
    assert ins[0].args == ("busybox:latest",) and ins[0].line == 2
    assert ins[1].args == ("A=1", "B=two words")
    assert ins[2].args == ("C=plain value",)
    assert ins[4].args == ("--chown=1000:1000", "a.txt", "b/", "/app/")
    assert ins[5].args == ("/bin/sh", "-c", "echo hi && echo there") and ins[5].line == 7
    assert ins[6].args == ("/bin/sh", "-c", "true")
    assert ins[8].args == ("8080", "9090/udp")
    assert ins[9].args == ("k=v", "x=y z")
    assert ins[10].args == ("/bin/app",)
    assert ins[11].args == ("/bin/sh", "-c", "serve --port 8080")


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("RUN true\n", "G:1", "first instruction must be FROM"),
        ("FROM a\nFROBNICATE x\n", "G:2", "unknown instruction 'FROBNICATE'"),
        ("FROM a\n\n\nCOPY onlyone\n", "G:4", "at least one source"),
        ('FROM a\nRUN ["unterminated\n', "G:2", "bad JSON array"),
        ("FROM a\nEXPOSE http\n", "G:2", "bad port"),
        ("FROM a\nENV\n", "G:2", "needs an argument"),
        ("FROM a\nENV A=1 =2\n", "G:2", "KEY=VALUE"),
        ("FROM a b\n", "G:1", "exactly one argument"),
        ("FROM a\nFROM b\n", "G:2", "only one FROM"),
        ("FROM a\nCOPY --from=x a b\n", "G:2", "unsupported flag"),
        ("# nothing\n", "G", "no instructions"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, where: str, words: str) -> None:
    with pytest.raises(BuildError) as exc:
        parse(text, "G")
    msg = str(exc.value)
    assert msg.startswith(where + ":") and words in msg and "\n" not in msg
