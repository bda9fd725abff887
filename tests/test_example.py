"""The example shop as the Quickstart runs it: a subprocess with its own settings and SQLite."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
DEMO_TIMEOUT = 120


def shop_environment(tmp_path, **variables):
    """The caller's environment without any shop or Zinrelo setting, plus ``variables``."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ZINRELO_", "SHOP_", "DJANGO_"))
    }
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {
        **clean,
        "PYTHONPATH": path,
        "SHOP_ENV_FILE": str(tmp_path / "no.env"),
        "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.sqlite3'}",
        **variables,
    }


def manage(tmp_path, *arguments, **variables):
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, str(EXAMPLE / "manage.py"), *arguments],
        env=shop_environment(tmp_path, **variables),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def award_log(output):
    """The printed table's rows, by order number."""
    rows = [re.split(r" {2,}", line) for line in output.splitlines() if line.startswith("DEMO-")]
    header = [
        "order",
        "member",
        "status",
        "points",
        "left",
        "attempts",
        "calls",
        "last code",
        "reason",
    ]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows if len(row) == 9}


def check_log(log):
    for number in ("DEMO-1001", "DEMO-1002", "DEMO-1003"):
        assert (log[number]["status"], log[number]["calls"]) == ("awarded", "200")
        assert int(log[number]["points"]) > 0
    refused = log["DEMO-1004"]
    assert (refused["member"], refused["status"], refused["last code"]) == (
        "blocked@example.com",
        "refused",
        "MEMBER_BLOCKED",
    )
    retried = log["DEMO-1005"]
    assert (retried["status"], retried["attempts"], retried["calls"]) == (
        "awarded",
        "2",
        "503, 200",
    )
    invalid = log["DEMO-1006"]
    assert (invalid["status"], invalid["calls"], invalid["last code"]) == (
        "invalid",
        "none",
        "invalid_order",
    )
    assert "no customer identifier" in invalid["reason"]
    cancelled = log["DEMO-1007"]
    assert (cancelled["status"], cancelled["left"], cancelled["calls"]) == (
        "awarded",
        "0",
        "200, 200",
    )
    refunded = log["DEMO-1008"]
    assert 0 < int(refunded["left"]) < int(refunded["points"])
    assert refunded["calls"] == "200, 200"


def test_the_demo_prints_every_outcome_and_can_run_again(tmp_path):
    first = manage(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    check_log(award_log(first.stdout))
    assert "Superuser: admin / admin (created)" in first.stdout
    assert "manage.py runserver" in first.stdout
    assert "http://127.0.0.1:8000/admin/" in first.stdout
    assert "manage.py zinrelo_sandbox" in first.stdout

    again = manage(tmp_path, "demo")
    assert again.returncode == 0, again.stderr
    log = award_log(again.stdout)
    check_log(log)
    assert len(log) == 8  # the demo's orders were replaced, not added to
    assert "admin (already there" in again.stdout


def example_settings(tmp_path, **variables):
    code = "import json, shopsite.settings as s; print(json.dumps(s.ZINRELO))"
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        env=shop_environment(tmp_path, **variables),
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_without_credentials_the_example_talks_to_the_sandbox(tmp_path):
    zinrelo = example_settings(tmp_path)
    assert zinrelo["API_URL"] == "http://127.0.0.1:8765/v2/loyalty/"
    assert (zinrelo["PARTNER_ID"], zinrelo["API_KEY"]) == ("sandbox-partner", "sandbox-key")


def test_credentials_from_a_dot_env_file_and_the_environment(tmp_path):
    dot_env = tmp_path / ".env"
    dot_env.write_text(
        "ZINRELO_PARTNER_ID=partner-from-file\n"
        "ZINRELO_API_KEY=key-from-file\n"
        "ZINRELO_API_URL=https://file.example/v2/loyalty/\n"
    )
    zinrelo = example_settings(
        tmp_path, SHOP_ENV_FILE=str(dot_env), ZINRELO_API_URL="https://env.example/v2/loyalty/"
    )
    assert zinrelo["PARTNER_ID"] == "partner-from-file"
    assert zinrelo["API_KEY"] == "key-from-file"
    assert zinrelo["API_URL"] == "https://env.example/v2/loyalty/"  # the environment wins


def test_with_credentials_and_no_url_the_example_talks_to_zinrelo(tmp_path):
    zinrelo = example_settings(tmp_path, ZINRELO_PARTNER_ID="p", ZINRELO_API_KEY="k")
    assert zinrelo["API_URL"] == "https://api.zinrelo.com/v2/loyalty/"


@pytest.mark.parametrize(
    "command", [["check", "--fail-level", "WARNING"], ["makemigrations", "--check", "--dry-run"]]
)
def test_the_example_shop_is_consistent(tmp_path, command):
    result = manage(tmp_path, *command)
    assert result.returncode == 0, result.stdout + result.stderr
