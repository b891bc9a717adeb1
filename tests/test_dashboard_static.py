"""The web dashboard's files: shipped as package data, served by the app, nothing fetched from
the internet, and every module a page imports is there (no build step to catch it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.test_api_support import NO_AUTH, api_on_built_service

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "dashboard_api" / "static"
FILES = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())


def test_every_dashboard_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dashboard_api"]
    package = STATIC.parent
    shipped = {
        p.relative_to(STATIC).as_posix() for pattern in patterns for p in package.glob(pattern) if p.is_file()
    }  # as setuptools globs them
    missing = sorted(set(FILES) - shipped)
    assert not missing, f"not in [tool.setuptools.package-data] dashboard_api: {missing}"


def test_every_dashboard_file_is_served_without_login_and_fetches_nothing_outside(tmp_path: Path) -> None:
    assert "index.html" in FILES and "js/app.js" in FILES
    with api_on_built_service(tmp_path) as api:
        for f in FILES:
            r = api.get(f"/static/{f}", headers=NO_AUTH)
            assert r.status_code == 200, f
            assert r.headers["cache-control"] == "no-cache", f
            text = r.text
            # no CDN, no web font, no analytics: only this app's own files
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), f
            assert not re.search(r"""(import|from)\s*\(?\s*["'](https?:)?//""", text), f
            assert "@import" not in text and "url(http" not in text, f
        assert api.get("/static/nothing.js", headers=NO_AUTH).status_code == 404
        assert api.get("/static/../app.py", headers=NO_AUTH).status_code == 404


def test_the_modules_import_only_files_that_exist() -> None:
    for f in FILES:
        if not f.endswith(".js"):
            continue
        source = (STATIC / f).read_text()
        for target in re.findall(r"""^import\s[^;]*?from\s+["']([^"']+)["']""", source, re.M | re.S):
            assert target.startswith("./"), (f, target)
            assert (STATIC / f).parent.joinpath(target).resolve().is_file(), (f, target)
