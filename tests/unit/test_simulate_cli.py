"""``modelcast simulate``'s own text: device profiles, and what it says about bad input (a
run against a broker is tests/integration/test_simulate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcast.cli import main
from modelcast.cli.simulate import parse_profile
from modelcast.errors import CommandError
from tests.support.download_release import ROOT


@pytest.fixture
def trust(tmp_path: Path) -> Path:
    path = tmp_path / "root.pub"
    path.write_bytes(ROOT.verify_key.to_pem())
    return path


def test_a_profile_is_tags_and_the_facts_variant_rules_read() -> None:
    p = parse_profile("class=small,site=a,ram_mb=512,arch=aarch64,provider=X,provider=Y")
    assert dict(p.tags) == {"class": "small", "site": "a"}
    assert (p.ram_mb, p.arch, p.providers) == (512, "aarch64", ("X", "Y"))
    with pytest.raises(CommandError):
        parse_profile("class")
    with pytest.raises(CommandError):
        parse_profile("ram_mb=lots")


def test_the_command_says_what_is_wrong(trust: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--devices", "0", "--trust", str(trust)]) == 1
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert main(["simulate", "--devices", "5", "--trust", str(trust) + ".missing"]) == 1
    assert "cannot read the trust file" in capsys.readouterr().err
    assert main(["simulate", "--devices", "5", "--trust", str(trust), "--until-active", "m"]) == 1
    assert "NAME@VERSION" in capsys.readouterr().err
