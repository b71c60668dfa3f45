"""The builder's config changes for metadata instructions (pure)."""

from __future__ import annotations

from agent.images.build import _apply_meta, _State
from agent.images.gantryfile import parse


def _config(text: str) -> dict[str, object]:
    state = _State()
    for ins in parse("FROM scratch\n" + text)[1:]:
        _apply_meta(state, ins)
    return state.config


def test_env_overrides_and_keeps_order() -> None:
    cfg = _config("ENV A=1 B=2\nENV A=3\n")
    assert cfg["Env"] == ["B=2", "A=3"]


def test_workdir_is_relative_to_the_previous() -> None:
    assert _config("WORKDIR /app\nWORKDIR sub/../lib\n")["WorkingDir"] == "/app/lib"


def test_entrypoint_resets_cmd_and_cmd_after_keeps_it() -> None:
    cfg = _config('CMD ["a"]\nENTRYPOINT ["/bin/x"]\n')
    assert cfg["Entrypoint"] == ["/bin/x"] and "Cmd" not in cfg
    cfg = _config('ENTRYPOINT ["/bin/x"]\nCMD ["a"]\n')
    assert cfg["Entrypoint"] == ["/bin/x"] and cfg["Cmd"] == ["a"]


def test_ports_labels_user() -> None:
    cfg = _config("EXPOSE 80 53/udp\nLABEL a=1\nLABEL b=2 a=3\nUSER app:staff\n")
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "3", "b": "2"}
    assert cfg["User"] == "app:staff"
