"""The built wheel carries what the server needs at run time: docs, dashboard, migrations.

An editable install reads files from the checkout, so a file missing from the
package data only shows once Conveyor is installed from its wheel: this test
builds one, installs it into a fresh virtualenv and serves the docs from there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = textwrap.dedent(
    """
    import sys
    import conveyor
    from fastapi.testclient import TestClient
    from conveyor.api.app import create_app
    from conveyor.settings import Settings
    from conveyor.store.migrate import upgrade

    assert conveyor.__file__.startswith(sys.prefix), conveyor.__file__
    settings = Settings(database_url=f"sqlite:///{sys.argv[1]}/wheel.db")
    upgrade(settings.service_database())  # the migrations are in the wheel too
    client = TestClient(create_app(settings))
    for url in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js",
                "/docs/assets/swagger-ui.css", "/docs/assets/redoc.standalone.js"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    schema = client.get("/openapi.json").json()
    listed = schema["paths"]["/api/v1/runs"]["get"]["responses"]["200"]["content"]
    assert "example" in listed["application/json"], "the examples file is missing"
    # The dashboard: `/` leads to its sign-in page, rendered from the wheel's templates.
    login = client.get("/")
    assert login.status_code == 200 and login.url.path == "/ui/login", login.url
    assert 'name="api_key"' in login.text, login.text[:200]
    assert "default-src 'self'" in login.headers["content-security-policy"]
    for url in ("/ui/static/conveyor.js", "/ui/static/conveyor.css", "/favicon.ico"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    print("ok", conveyor.__file__)
    """
)


# Building, installing into a new venv and starting the app take ~45 s on an idle host and
# over 110 s on a loaded one: the suite's 120 s hang guard is too tight for this test alone.
@pytest.mark.timeout(600)
def test_the_wheel_serves_its_docs_offline(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "conveyor", source / "conveyor", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"building the wheel failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = wheels.glob("conveyor-*.whl")

    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(purelib),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, f"installing the wheel failed:\n{install.stderr}"
    # The dependencies come from the test's own environment; a path in a .pth
    # file is only appended, so the wheel's `conveyor` is found first (and the
    # checkout's editable-install hook, itself a .pth there, is not run).
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run = subprocess.run(
        [str(python), "-c", CHECK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, f"the installed wheel failed:\n{run.stdout}\n{run.stderr}"
    assert str(purelib) in run.stdout
