"""docker-compose.yml holds together: it parses, its images are pinned, every `fleetscope` command and option in it
exists in the CLI, and every variable it sets is read by the code, a provisioning file or the image it is given to.

Docker does not run here; the pieces are checked directly.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fleetscope.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# Variables read by the images themselves, not by fleetscope: the PostgreSQL
# entrypoint's and Grafana's (GF_<SECTION>_<KEY> overrides grafana.ini).
IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
IMAGE_PREFIXES = ("GF_",)
# Where a FLEETSCOPE_ variable may be read: the code and the files the
# containers are given (Grafana's provisioning, the database's init scripts).
READERS = [*ROOT.glob("fleetscope/**/*.py"), *ROOT.glob("collector/**/*.py"), *ROOT.glob("exporters/**/*.py"),
           *ROOT.glob("dashboard/**/*.py"), *ROOT.glob("grafana/provisioning/**/*.yaml"),
           *ROOT.glob("docker/**/*.sh")]


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for name, service in SERVICES.items():
        command = service.get("command")
        if command is None:
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        if argv[0] == "fleetscope":
            found.append((name, argv[1:]))
    return found


def test_the_file_has_the_services_volumes_and_health_checks_production_needs():
    assert set(SERVICES) == {"db", "init", "collector", "dashboard", "grafana"}
    for name in ("db", "collector", "dashboard", "grafana"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["init"]["restart"] == "no"
    assert SERVICES["collector"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert SERVICES["init"]["depends_on"]["db"]["condition"] == "service_healthy"
    named = {v.split(":", 1)[0] for s in SERVICES.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named == set(COMPOSE["volumes"])
    for volume in (v for s in SERVICES.values() for v in s.get("volumes", []) if v.startswith(".")):
        assert (ROOT / volume.split(":", 1)[0]).exists(), volume


def test_every_image_is_pinned_to_a_version():
    images = {name: s["image"] for name, s in SERVICES.items() if "build" not in s}
    assert images["db"].startswith("timescale/timescaledb-ha:")
    assert images["grafana"].startswith("grafana/grafana:")
    for name, image in images.items():
        tag = image.rpartition(":")[2]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


@pytest.mark.parametrize("service, argv", _commands(), ids=[name for name, _ in _commands()])
def test_every_fleetscope_command_and_option_exists_in_the_cli(service, argv):
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    if argv[0] not in subcommands:
        # `fleetscope dashboard` is the dashboard issue's (built on main); this
        # branch meets it at the merge, and the test then checks its options.
        assert argv[0] == "dashboard", f"{service}: no `fleetscope {argv[0]}` command"
        pytest.skip("`fleetscope dashboard` arrives with the dashboard issue's merge")
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{service}: `fleetscope {' '.join(argv)}` is refused by the CLI's parser")


def test_every_variable_set_in_a_container_is_read_by_something():
    sources = "\n".join(p.read_text() for p in READERS)
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for variable in environment:
            if variable in IMAGE_VARIABLES or variable.startswith(IMAGE_PREFIXES):
                continue
            assert variable.startswith("FLEETSCOPE_"), f"{name}: {variable} is neither ours nor the image's"
            assert re.search(rf"\b{variable}\b", sources), f"{name}: nothing reads {variable}"


def test_every_variable_the_file_interpolates_is_in_the_example_env_file():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, used - example


def test_the_dockerfile_copies_what_exists():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+?) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert "USER fleetscope" in dockerfile
