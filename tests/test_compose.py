"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

Every service command is resolved against the real CLIs (`hpo` through typer, `mlflow server`
through its click group) and parsed as they would parse it, so a misspelled command or option
fails here; the static rules (healthchecks behind depends_on, ports, secrets, GPU reservations)
are checked on the parsed YAML; `docker-compose config` validates the file when installed.
Mutation tests prove each rule catches what it is for.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hpo.cli import app
from tests.clis import command_clis, default_entrypoint, resolve

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"postgres", "mlflow", "dashboard", "study", "worker"}
PUBLISHED = {"dashboard", "mlflow"}  # the only services a user opens in a browser
ENV = {"POSTGRES_PASSWORD": "test-only-password", "DATA_DIR": "/tmp"}
_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")

runner = CliRunner()


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: ${V}, ${V:-default}, ${V-default}, ${V:?error}, $V, $$."""

    def sub(m: re.Match) -> str:
        name = m["name"] or m["bare"]
        value, op = env.get(name), m["op"] or ""
        if op.endswith("-"):
            return value if value or (op == "-" and value is not None) else m["arg"]
        if op.endswith("?"):
            return value or f"<{name}>"
        return value or ""

    return "$".join(_VAR.sub(sub, part) for part in text.split("$$"))


def command_problems(spec: dict, env: dict[str, str]) -> list[str]:
    problems = []
    clis = command_clis()
    for name, service in spec["services"].items():
        if "command" not in service:
            continue
        entrypoint = service.get("entrypoint") or (default_entrypoint() if "build" in service else None)
        if entrypoint is None:
            problems.append(f"{name}: a command for an image whose entrypoint is unknown here")
            continue
        entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
        command = service["command"]
        command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        argv = [interpolate(a, env) for a in entrypoint + command]
        if argv[0] not in clis:
            problems.append(f"{name}: cannot check program '{argv[0]}'")
            continue
        path, problem = resolve(clis[argv[0]], argv[0], argv[1:])
        if problem:
            problems.append(f"{name}: {problem}")
        elif argv[0] == "hpo":  # the help of the resolved command renders, as a user would see it
            result = runner.invoke(app, [*path[1:], "--help"])
            if result.exit_code != 0:
                problems.append(f"{name}: 'hpo {' '.join(path[1:])} --help' exits {result.exit_code}")
    return problems


def static_problems(spec: dict) -> list[str]:
    problems = []
    services: dict[str, dict] = spec.get("services") or {}
    if set(services) != SERVICES:
        problems.append(f"services are {sorted(services)}, expected {sorted(SERVICES)}")
    volumes = set(spec.get("volumes") or {})
    for name, s in services.items():
        for dep, how in _depends_on(s).items():
            cond = how.get("condition", "service_started")
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service '{dep}'")
            elif cond == "service_healthy" and not services[dep].get("healthcheck", {}).get("test"):
                problems.append(f"{name}: waits for '{dep}' to be healthy, but '{dep}' has no healthcheck")
            elif cond == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(f"{name}: waits for '{dep}' to complete, but '{dep}' restarts")
            elif cond not in ("service_started", "service_healthy", "service_completed_successfully"):
                problems.append(f"{name}: unknown depends_on condition '{cond}'")
        for port in s.get("ports") or []:
            if name not in PUBLISHED:
                problems.append(f"{name}: publishes port {port}; only {sorted(PUBLISHED)} need a port")
            elif not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published beyond 127.0.0.1")
        for mount in s.get("volumes") or []:
            source = str(mount).split(":")[0]
            if source.startswith((".", "/")):
                if source.startswith(".") and not (ROOT / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist in the repository")
            elif not source.startswith("$") and source not in volumes:
                problems.append(f"{name}: volume '{source}' is not declared under top-level volumes")
        problems += _secret_problems(name, s)
    problems += _cycle_problems(services)
    pg = services.get("postgres", {})
    if "pg_isready" not in " ".join(map(str, pg.get("healthcheck", {}).get("test", []))):
        problems.append("postgres: the healthcheck must run pg_isready")
    if not any(str(v).split(":")[0] in volumes for v in pg.get("volumes") or []):
        problems.append("postgres: data must live on a named volume")
    problems += _hf_cache_problems(services, volumes)
    worker = services.get("worker", {})
    deploy = worker.get("deploy", {})
    if "replicas" not in deploy:
        problems.append("worker: deploy.replicas is missing")
    devices = deploy.get("resources", {}).get("reservations", {}).get("devices", [])
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        problems.append("worker: no nvidia GPU reservation (driver nvidia, capabilities [gpu])")
    return problems


def _hf_cache_problems(services: dict[str, dict], volumes: set[str]) -> list[str]:
    """`study create` downloads the pretrained weights that the workers then read offline: both
    mount one named volume at the image's HF_HOME."""
    home = re.search(r"\bHF_HOME=(\S+)", DOCKERFILE.read_text())
    if home is None:
        return ["Dockerfile: no ENV HF_HOME for the Hugging Face cache"]
    sources = {
        name: {
            str(m).split(":")[1]: str(m).split(":")[0] for m in services.get(name, {}).get("volumes") or []
        }.get(home[1])
        for name in ("study", "worker")
    }
    if len(set(sources.values())) != 1 or not set(sources.values()) <= volumes:
        return [f"study and worker do not mount one named volume at HF_HOME ({home[1]}): {sources}"]
    return []


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else {d: (v or {}) for d, v in deps.items()}


def _cycle_problems(services: dict[str, dict]) -> list[str]:
    state: dict[str, int] = {}

    def visit(name: str) -> bool:  # True when a cycle runs through name
        if state.get(name) == 1:
            return True
        if state.get(name) == 2 or name not in services:
            return False
        state[name] = 1
        cyclic = any(visit(dep) for dep in _depends_on(services[name]))
        state[name] = 2
        return cyclic

    return [f"depends_on cycle through '{n}'" for n in services if state.get(n) is None and visit(n)]


_SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.I)
_URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>(?:\$\{[^}]*\}|[^@\s$])*)@")
_REQUIRED_VAR = re.compile(r"^\$\{\w+:\?[^}]*\}$")


def _secret_problems(name: str, service: dict) -> list[str]:
    """Passwords come from the environment only: ${VAR:?...}, never a literal in the file."""
    problems = []
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=value form
        env = dict(str(e).partition("=")[::2] for e in env)
    texts = [str(v) for v in env.values()] + [str(c) for c in (service.get("command") or [])]
    for key, value in env.items():
        if _SECRET_KEY.search(key) and not _REQUIRED_VAR.match(str(value)):
            problems.append(f"{name}: {key} must be ${{VAR:?message}} from the environment, not '{value}'")
    for text in texts:
        for m in _URL_PASSWORD.finditer(text):
            if not _REQUIRED_VAR.match(m["password"]):
                problems.append(f"{name}: a URL carries a literal password; use ${{POSTGRES_PASSWORD:?...}}")
    return problems


def dockerfile_problems() -> list[str]:
    text = DOCKERFILE.read_text()
    problems = []
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    pin = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    if not base or "cuda" not in base[1]:
        problems.append("Dockerfile: BASE_IMAGE must be a CUDA build")
    elif pin and not base[1].split(":")[1].startswith(pin[1] + "-"):
        problems.append(f"Dockerfile: base image {base[1]} does not carry torch=={pin[1]} (pyproject)")
    if default_entrypoint() != ["hpo"]:
        problems.append('Dockerfile: ENTRYPOINT must be ["hpo"]')
    for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        problems += [
            f"Dockerfile: COPY source {src} is missing" for src in m[1].split() if not (ROOT / src).exists()
        ]
    if not re.search(r"^USER (?!root)\w+", text, re.M):
        problems.append("Dockerfile: runs as root; add an unprivileged USER")
    return problems


def compose_problems(text: str, env: dict[str, str] = ENV) -> list[str]:
    """Everything wrong with a compose file's text; empty when it is fine."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    if not isinstance(spec, dict) or not isinstance(spec.get("services"), dict):
        return ["no services mapping"]
    return static_problems(spec) + command_problems(spec, env)


# ---------------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text()


def test_compose_file_has_no_problems(compose_text: str) -> None:
    assert compose_problems(compose_text) == []


def test_dockerfile_has_no_problems() -> None:
    assert dockerfile_problems() == []


def test_every_service_command_is_resolved(compose_text: str) -> None:
    """The checker really walks each command: paths as the CLIs see them."""
    spec = yaml.safe_load(compose_text)
    clis = command_clis()
    paths = {}
    for name, s in spec["services"].items():
        if "command" in s:
            argv = [interpolate(a, ENV) for a in (s.get("entrypoint") or default_entrypoint()) + s["command"]]
            paths[name] = resolve(clis[argv[0]], argv[0], argv[1:])
    assert paths == {
        "mlflow": (["mlflow", "server"], None),
        "study": (["hpo", "study", "create"], None),
        "worker": (["hpo", "worker"], None),
        "dashboard": (["hpo", "dashboard"], None),
    }


# ---------------------------------------------------------------------------------------------
# Mutations: each rule catches what it is for
# ---------------------------------------------------------------------------------------------

MUTATIONS = [
    ("      - worker\n", "      - wroker\n", "has no command 'wroker'"),
    ("      - study\n      - create\n", "      - study\n      - creat\n", "has no command 'creat'"),
    ('command: ["dashboard",', 'command: ["dashbaord",', "has no command 'dashbaord'"),
    ("      - --n-trials\n", "      - --n-trails\n", "--n-trails"),
    ("      - --checkpoint-dir\n", "      - --checkpoint-path\n", "--checkpoint-path"),
    ("      - --artifacts-destination\n", "      - --artifact-destination\n", "--artifact-destination"),
    ("      - --space\n      - ${SPACE:-default}\n", "", "--space"),  # a required option dropped
    ('      - "5000"\n', "      - five-thousand\n", "five-thousand"),  # a bad value for an int option
    (
        "    restart: unless-stopped\n\n  mlflow:",
        '    ports: ["5432:5432"]\n\n  mlflow:',
        "postgres: publishes",
    ),
    ('"127.0.0.1:8080:8080"', '"8080:8080"', "beyond 127.0.0.1"),
    (
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}",
        "POSTGRES_PASSWORD: hunter2",
        "POSTGRES_PASSWORD must be",
    ),
    (
        "foldtune:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@postgres:5432/foldtune",
        "foldtune:hunter2@postgres:5432/foldtune",
        "literal password",
    ),
    ("service_completed_successfully", "service_completed_succesfully", "unknown depends_on condition"),
    ('    restart: "no"\n', "    restart: on-failure\n", "'study' restarts"),
    ("              capabilities: [gpu]\n", "              capabilities: [utility]\n", "no nvidia GPU"),
    ("      replicas: ${WORKER_REPLICAS:-1}\n", "", "deploy.replicas"),
    ("      - hf-cache:/work/.hpo/hf", "      - hf-other:/work/.hpo/hf", "one named volume at HF_HOME"),
]


@pytest.mark.parametrize(("old", "new", "expected"), MUTATIONS, ids=[m[2] for m in MUTATIONS])
def test_checker_catches_mutations(compose_text: str, old: str, new: str, expected: str) -> None:
    assert old in compose_text, f"mutation target vanished from docker-compose.yml: {old!r}"
    problems = compose_problems(compose_text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_checker_catches_healthcheck_gaps(compose_text: str) -> None:
    spec = yaml.safe_load(compose_text)
    del spec["services"]["mlflow"]["healthcheck"]
    assert any("'mlflow' has no healthcheck" in p for p in static_problems(spec))
    spec = yaml.safe_load(compose_text)
    spec["services"]["postgres"]["depends_on"] = {"worker": {"condition": "service_started"}}
    assert any("cycle" in p for p in static_problems(spec))


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$HOME", env) == "x d d  x $HOME"
    assert interpolate("${UNSET:?say}", env) == "<UNSET>"


# ---------------------------------------------------------------------------------------------
# docker-compose's own validation (no engine needed), when the binary is installed
# ---------------------------------------------------------------------------------------------


def _compose_config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = "docker-compose not installed (apt-get install docker-compose); the static checks still ran"
        if os.environ.get("FOLDTUNE_TEST_REQUIRE_COMPOSE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    clean = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "DATA_DIR")}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "config", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_config_validates() -> None:
    done = _compose_config(ENV, "--services")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == SERVICES


def test_docker_compose_requires_the_password() -> None:
    done = _compose_config({"DATA_DIR": "/tmp"})
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr
