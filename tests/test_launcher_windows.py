"""Native Windows: `ticslab up` and `ticslab demo` refuse at once, in one line and in the
class's language, pointing to WSL or Docker Desktop; nothing is started or written.

The Windows branch is forced by replacing the platform check; everything else is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services import cli
from services.lang import missing_keys
from services.launcher import windows
from services.launcher.stack import Stack, StackOptions, StartError


@pytest.fixture()
def on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Windows forced; the token file (which `up` writes first) pointed into ``tmp_path``."""
    monkeypatch.setattr(windows, "native_windows", lambda: True)
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.delenv("TICSLAB_LANG", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "env_lang", "expected"),
    [
        (["up"], None, "does not run on native Windows"),
        (["up"], "es", "no funciona en Windows nativo"),
        (["demo", "--lang", "es"], None, "no funciona en Windows nativo"),
        (["demo"], "en", "does not run on native Windows"),
    ],
)
def test_up_and_demo_refuse_native_windows_before_anything_starts(
    on_windows: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env_lang: str | None,
    expected: str,
) -> None:
    if env_lang:
        monkeypatch.setenv("TICSLAB_LANG", env_lang)
    data = on_windows / "data"
    assert cli.main([*argv, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err and "WSL" in err and "Docker Desktop" in err, err
    assert f"ticslab {argv[0]} " in err
    assert not data.exists() and not (on_windows / "token").exists(), "nothing was started"


def test_every_stack_refuses_too(on_windows: Path) -> None:
    """`ticslab experiment` builds its stacks with Stack directly: they refuse the same way."""
    stack = Stack(StackOptions(data_dir=on_windows / "data"), "token", None)  # type: ignore[arg-type]
    with pytest.raises(StartError, match="WSL"):
        stack.start()
    assert not (on_windows / "data").exists()


def test_this_platform_is_not_refused() -> None:
    assert windows.refusal("up") is None


def test_the_refusal_says_the_same_in_both_languages() -> None:
    assert missing_keys(windows.CATALOGUE) == {}
