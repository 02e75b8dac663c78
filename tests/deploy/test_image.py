"""The Dockerfile, checked without a Docker engine: its rules read from the file, and its
builder stage replayed on this machine (the build context the .dockerignore leaves, then the
same `uv sync`), so that the environment the final stage copies runs every service."""

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from taskhub_common.serve import targets

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM on."""
    return re.split(r"^(?=FROM )", DOCKERFILE, flags=re.MULTILINE)[1:]


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's matching for the patterns used here: a pattern matches the path or a parent."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not replayed here"
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def test_the_base_image_is_an_argument_and_there_are_two_stages() -> None:
    assert DOCKERFILE.count("ARG BASE_IMAGE=python:3.11-slim") == 1
    builder, final = stages()
    assert builder.startswith("FROM ${BASE_IMAGE} AS builder")
    assert final.startswith("FROM ${BASE_IMAGE}\n")


def test_the_builder_installs_the_locked_runtime_only() -> None:
    builder, _ = stages()
    assert re.search(r"uv sync --frozen --no-dev --no-editable\b", builder)


def test_the_final_stage_holds_the_runtime_only_and_runs_as_a_user() -> None:
    _, final = stages()
    copies = re.findall(r"^COPY .*$", final, flags=re.MULTILINE)
    assert copies == ["COPY --from=builder /app/.venv /app/.venv"]
    (user,) = re.findall(r"^USER (\d+):(\d+)$", final, flags=re.MULTILINE)
    assert int(user[0]) != 0 and int(user[1]) != 0
    assert 'ENTRYPOINT ["python", "-m", "taskhub_common.serve"]' in final
    assert "DATA_DIR=/var/lib/taskhub" in final


def test_the_build_context_leaves_out_tests_and_local_state() -> None:
    patterns = ignore_patterns()
    for path in (".venv/bin/python", "var/pgdata", "services/tasks/tests/test_x.py", "docs/a.md"):
        assert ignored(path, patterns), path
    for path in ("uv.lock", "pyproject.toml", "services/tasks/tasks/migrations/env.py"):
        assert not ignored(path, patterns), path
    assert not ignored("libs/common/taskhub_common/testing/__init__.py", patterns)


@pytest.mark.timeout(600)
def test_the_builder_stage_replayed_gives_an_environment_that_serves_every_service(
    tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    patterns = ignore_patterns()
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignored(relative, patterns):
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    venv = tmp_path / "venv"
    # Hard links from uv's cache, not copies as in the image (whose cache is a mount of another
    # filesystem): what lands in the environment is the same, at a fraction of the time.
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "hardlink"}
    env.pop("VIRTUAL_ENV", None)
    # uv as `make install` finds it (the machine's python3 has it).
    uv = shutil.which("uv") or "uv"
    subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--no-editable", "--quiet"],
        cwd=context,
        env=env,
        check=True,
        timeout=540,
    )
    # Run from elsewhere, as the image does: nothing may come from the source tree.
    check = (
        "from taskhub_common.serve import migrations_dir, target, targets\n"
        "import importlib\n"
        "for t in targets():\n"
        "    module = importlib.import_module(t.app_factory.split(':')[0])\n"
        "    assert 'site-packages' in module.__file__, module.__file__\n"
        "    print(t.name, migrations_dir(t) is not None)\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    served = dict(line.split() for line in result.stdout.splitlines())
    assert served == {t.name: str(t.name != "gateway") for t in targets()}
    dev_tools = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pytest"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert dev_tools.returncode != 0, "the dev group was installed"
