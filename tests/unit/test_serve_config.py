"""`make serve CONFIG=FILE` with a file it cannot use: one line saying why, exit 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import demo


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read it (No such file or directory)"),
        ("{bad", "not JSON (Expecting property name"),
        ('{"app_id": "x"}', "app_id must be the numeric APPID"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_a_configuration_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    said: str,
) -> None:
    started = []
    monkeypatch.setattr(demo, "running_stack", lambda *a, **k: started.append(a))
    config = tmp_path / "alipay.json"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        demo.main(["serve", "--config", str(config)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and said in err and "Traceback" not in err
    assert err.count("\n") == 2 and started == []  # usage and the error; no stand-in started
