"""docs/oscar.md's settings snippet is what this suite runs on: it works as pasted."""

import ast
import re
from pathlib import Path

from django.conf import settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "oscar.md"


def snippet():
    text = DOC.read_text()
    found = re.search(r"```python\n# settings.py\n(.*?)```", text, re.S)
    assert found, "docs/oscar.md has no settings.py snippet"
    return ast.parse(found.group(1))


def assigned(name):
    for node in snippet().body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == name:
            return node.value
    raise AssertionError(f"{name} is not in docs/oscar.md's snippet")


def test_the_zinrelo_settings_are_the_suites():
    from tests_oscar.settings import TEST_ONLY

    shop = {key: value for key, value in settings.ZINRELO.items() if key not in TEST_ONLY}
    assert ast.literal_eval(assigned("ZINRELO")) == shop


def test_the_apps_are_listed_in_the_suites_order():
    listed = [item.value for item in assigned("INSTALLED_APPS").elts]
    apps = settings.INSTALLED_APPS
    assert [app for app in apps if app in listed] == listed


def test_the_defaults_shown_are_the_apps():
    from django_zinrelo.contrib.oscar.conf import DEFAULTS

    shown = ast.literal_eval(assigned("ZINRELO"))["OSCAR"]
    assert {key: list(v) if isinstance(v, tuple) else v for key, v in DEFAULTS.items()} == shown
