#!/usr/bin/env python3
"""Checks docker-compose.yml against the production shape docs/operations.md describes, without Docker.

Development and CI machines have no Docker engine, so the stack is never started by the tests.
This checks what `docker compose config` would not: a three-node NATS cluster on the pinned
version, whose configs route to each other; two ingest replicas and two workers running the right
commands, with health checks and Prometheus targets on the ports their config sets; the workers
sharing one PostgreSQL service (named volume, health check, waited for) with its password from
the environment; operator ports bound to loopback only; Prometheus
loading the alert rules and sending alerts to an Alertmanager service whose config amtool accepts; Grafana provisioned with the dashboard; every mounted file present; a
multi-stage Dockerfile whose final image runs as a non-root user.

Exposure and NATS security (docs/operations.md "What the compose file exposes", "NATS credentials
and permissions"): no published port binds beyond the host's loopback except ingest's public one;
every NATS node requires authentication from clients (accounts with a password or NKey per user,
no anonymous user) and from the other nodes (cluster authorization, routes carrying its
credentials); every service that connects to NATS has credentials, as its own user with the
permission set of its role (permissions.conf), with the same password the NATS nodes are given.
When a nats-server binary is at hand (NATS_SERVER_BIN, .tools/nats/bin), each node's config is
checked with `nats-server -t` under the environment compose gives it. When `docker compose` is
installed, `docker compose config --quiet` runs too.

Usage: scripts/check-compose.py   (exit status 1 with one line per problem)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PyYAML, installed by scripts/install-test-tools.sh when the interpreter lacks it.
sys.path.insert(0, os.path.join(ROOT, ".tools", "python"))
import yaml  # noqa: E402

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def pinned_nats_version():
    match = re.search(r'^NATS_SERVER_VERSION="([^"]+)"', read("scripts/install-nats-server.sh"), re.M)
    return match.group(1) if match else None


def port_of(listen):
    return listen.rsplit(":", 1)[-1]


def volumes_of(service):
    """(source, target) of each volume, short or long syntax."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            yield str(volume.get("source", "")), str(volume.get("target", ""))
        else:
            parts = str(volume).split(":")
            yield parts[0], parts[1] if len(parts) > 1 else ""


def environment_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def health_test(service):
    """The healthcheck command as one string, or None when there is none or it is disabled."""
    health = service.get("healthcheck") or {}
    test = health.get("test")
    if health.get("disable") or not test:
        return None
    if isinstance(test, str):
        return test
    return None if test[0] not in ("CMD", "CMD-SHELL") else " ".join(str(part) for part in test[1:])


def yaml_files(folder):
    """Names of the YAML files in `folder` (relative to the repository), none when it is missing."""
    path = os.path.join(ROOT, folder)
    return [name for name in sorted(os.listdir(path)) if name.endswith((".yml", ".yaml"))] if os.path.isdir(path) else []


def without_comments(text):
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def flag(service, name, default):
    """The value of `--name=value` in the service's command, or `default`."""
    for arg in service.get("command") or []:
        if str(arg).startswith(f"--{name}="):
            return str(arg).split("=", 1)[1]
    return default


def receivers_of(route):
    """Every receiver a route tree names."""
    yield route.get("receiver")
    for child in route.get("routes") or []:
        yield from receivers_of(child)


def check_alertmanager(services, prometheus_config):
    """Prometheus sends its alerts to an Alertmanager service, on the port that service listens
    on; its image is pinned, its port stays on loopback, and its config is one `amtool
    check-config` accepts (only its structure is checked where amtool is missing)."""
    targets = [target for manager in (prometheus_config.get("alerting") or {}).get("alertmanagers") or []
               for sc in manager.get("static_configs") or [] for target in sc.get("targets") or []]
    check(targets, "prometheus: no target in alerting.alertmanagers (alerts would reach no one)")
    for target in targets:
        host, _, port = str(target).rpartition(":")
        service = services.get(host)
        if not check(service, f"prometheus: alertmanager target {target} is not a compose service"):
            continue
        check(re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", str(service.get("image", ""))),
              f"{host}: image {service.get('image')} is not a pinned prom/alertmanager version")
        check(port_of(flag(service, "web.listen-address", ":9093")) == port,
              f"prometheus: alertmanager target {target} is not the port {host} listens on")
        for published in service.get("ports") or []:
            check(str(published).startswith("127.0.0.1:"), f"{host}: publishes {published} beyond loopback")
        config_file = flag(service, "config.file", "/etc/alertmanager/alertmanager.yml")
        source = {target: source for source, target in volumes_of(service)}.get(config_file, "")
        if not check(source.startswith("./"), f"{host}: no config file mounted at {config_file}"):
            continue
        path = os.path.join(ROOT, source[2:])
        amtool = os.environ.get("AMTOOL_BIN") or shutil.which("amtool")
        if amtool:
            result = subprocess.run([amtool, "check-config", path], capture_output=True, text=True)
            check(result.returncode == 0, f"amtool check-config {source}: {(result.stdout + result.stderr).strip()}")
            receiver = {}
            for severity in ("page", "warn"):
                routed = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}",
                                         "alertname=InletAnyAlert", f"severity={severity}"], capture_output=True, text=True)
                receiver[severity] = routed.stdout.strip()
            check(receiver["page"] and receiver["page"] != receiver["warn"],
                  f"{source}: alerts with severity=page do not reach a receiver of their own ({receiver})")
        else:
            print(f"check-compose: amtool not found (scripts/install-amtool.sh): {source} checked for structure only")
            config = yaml.safe_load(read(source[2:])) or {}
            names = [receiver.get("name") for receiver in config.get("receivers") or []]
            check(len(names) == len(set(names)), f"{source}: receiver names are not unique")
            route = config.get("route") or {}
            check(route.get("receiver"), f"{source}: the top-level route has no receiver")
            for name in receivers_of(route):
                check(name is None or name in names, f"{source}: a route names receiver {name}, which is not defined")


LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")

# The permission set (a variable of deploy/nats/permissions.conf) of each Inlet binary's NATS user.
PERMISSION_SETS = {"inlet-ingest": "$INLET_INGEST_PERMISSIONS", "inlet-worker": "$INLET_WORKER_PERMISSIONS"}


def published_ports(service):
    """(host address, "" for every address; container port) of each published port, short or long syntax."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            yield str(port.get("host_ip") or ""), str(port.get("target", ""))
            continue
        text = str(port).split("/", 1)[0]
        if text.startswith("["):  # [::1]:8080:80
            host, _, rest = text[1:].partition("]:")
            yield host, rest.rsplit(":", 1)[-1]
            continue
        parts = text.split(":")
        yield (parts[0] if len(parts) == 3 else ""), parts[-1]


def with_defaults(value):
    """A compose value with each ${VAR:-default} replaced by its default (what compose runs without an .env)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def nats_config(conf_path):
    """A NATS server config (path relative to the repository) with its includes inlined, comments removed."""
    text = without_comments(read(conf_path))

    def inline(match):
        included = os.path.join(os.path.dirname(conf_path), match.group(1))
        if not check(os.path.exists(os.path.join(ROOT, included)), f"{conf_path}: includes {included}, which does not exist"):
            return ""
        return nats_config(included)

    return re.sub(r'^\s*include\s+"?([^"\s]+)"?\s*$', inline, text, flags=re.M)


def nats_users(conf):
    """Each user of the config's accounts: (account, {key: value}) from `{ user: …, password: …, … }` entries."""
    accounts = re.search(r"^accounts\s*\{(.*?)^\}", conf, re.M | re.S)
    users = []
    for account in re.finditer(r"^  (\w+)\s*\{(.*?)^  \}", accounts.group(1) if accounts else "", re.M | re.S):
        for entry in re.finditer(r"\{([^{}]*)\}", account.group(2)):
            fields = dict(re.findall(r"(\w+)\s*:\s*([^,\s}]+)", entry.group(1)))
            if "user" in fields or "nkey" in fields:
                users.append((account.group(1), fields))
    return users


def nats_server_bin():
    candidates = [os.environ.get("NATS_SERVER_BIN"), os.path.join(ROOT, ".tools", "nats", "bin", "nats-server")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def nats_server_accepts(name, conf_path, service, env):
    """`nats-server -t` on the node's config, its mounts in place and compose's environment (defaults)."""
    binary = nats_server_bin()
    if not binary:
        return
    with tempfile.TemporaryDirectory() as directory:
        for source, target in volumes_of(service):
            if source.startswith("./") and target.startswith("/etc/nats/"):
                shutil.copy(os.path.join(ROOT, source[2:]), os.path.join(directory, target[len("/etc/nats/"):]))
        values = {key: with_defaults(value) for key, value in env.items()}
        result = subprocess.run([binary, "-t", "-c", os.path.join(directory, "nats-server.conf")], capture_output=True,
                                text=True, env={"PATH": os.environ.get("PATH", ""), **values})
        check(result.returncode == 0, f"{name}: nats-server -t refuses its config: {(result.stderr or result.stdout).strip()}")


def inlet_nats_credentials(name, env):
    """The [nats] section a service runs with: deploy/inlet.toml, INLET__NATS__* overrides, { env = … } resolved."""
    with open(os.path.join(ROOT, "deploy", "inlet.toml"), "rb") as f:
        section = dict(tomllib.load(f).get("nats") or {})
    for key, value in env.items():
        if key.startswith("INLET__NATS__"):
            section[key[len("INLET__NATS__"):].lower()] = value
    for key, value in list(section.items()):
        if isinstance(value, dict) and set(value) == {"env"}:
            if check(value["env"] in env, f"{name}: nats.{key} refers to {value['env']}, which it is not given"):
                section[key] = env[value["env"]]
            else:
                section.pop(key)
    return section


def main():
    compose = yaml.safe_load(read("docker-compose.yml"))
    services = compose.get("services", {})
    declared_volumes = set((compose.get("volumes") or {}).keys())
    check(services, "no services")

    # Every host path mounted must exist; every named volume must be declared.
    for name, service in services.items():
        for source, _ in volumes_of(service):
            if source.startswith("./"):
                check(os.path.exists(os.path.join(ROOT, source)), f"{name}: mounts {source}, which does not exist")
            else:
                check(source in declared_volumes, f"{name}: named volume {source} is not declared")

    # NATS: three nodes on the pinned version, each routing to all three, all requiring credentials.
    version = pinned_nats_version()
    nats_passwords = {}  # user -> the compose value the NATS nodes get for its password
    nats = sorted(name for name in services if re.fullmatch(r"nats-\d+", name))
    check(nats == ["nats-1", "nats-2", "nats-3"], f"expected services nats-1..3, found {nats}")
    for name in nats:
        service = services[name]
        check(re.fullmatch(rf"nats:{re.escape(version or '?')}(-.+)?", str(service.get("image", ""))),
              f"{name}: image {service.get('image')} is not the pinned nats-server {version}")
        conf_mounts = [source for source, target in volumes_of(service) if target == "/etc/nats/nats-server.conf"]
        if not check(len(conf_mounts) == 1, f"{name}: no config mounted at /etc/nats/nats-server.conf"):
            continue
        conf_path = conf_mounts[0][2:]
        conf = nats_config(conf_path)
        # Includes are relative to the config: each included file must be mounted beside it.
        mounted = {target: source for source, target in volumes_of(service)}
        for included in re.findall(r'^\s*include\s+"?([^"\s]+)"?', without_comments(read(conf_path)), re.M):
            wanted = "./" + os.path.normpath(os.path.join(os.path.dirname(conf_path), included))
            check(mounted.get(f"/etc/nats/{included}") == wanted, f"{name}: {wanted} is not mounted at /etc/nats/{included}")
        check(re.search(rf"^server_name:\s*{name}\s*$", conf, re.M), f"{name}: server_name is not {name}")
        check(re.search(r"^jetstream\s*\{", conf, re.M), f"{name}: JetStream is not enabled")
        cluster = re.search(r"^cluster\s*\{(.*?)^\}", conf, re.M | re.S)
        cluster = cluster.group(1) if cluster else ""
        check(re.search(r"listen:\s*0\.0\.0\.0:6222", cluster), f"{name}: the cluster does not listen on 0.0.0.0:6222")
        env = environment_of(service)
        # Routes bypass every client permission: the cluster port requires its own credentials,
        # and each route URL (from the environment) carries them.
        route_auth = re.search(r"authorization\s*\{[^}]*?user:\s*(\S+)[^}]*?password:\s*\$(\w+)[^}]*\}", cluster, re.S)
        if check(route_auth, f"{name}: the cluster has no authorization {{ user, password from the environment }}"):
            route_user, route_password = route_auth.group(1), env.get(route_auth.group(2), "")
            check(route_password.startswith("${"), f"{name}: the route password is not taken from the environment")
            routes = [env.get(var, "") for var in re.findall(r"\$(\w+)", cluster.split("routes", 1)[-1])]
            for peer in nats:
                check(f"nats://{route_user}:{route_password}@{peer}:6222" in routes,
                      f"{name}: no cluster route to {peer} carrying the cluster's credentials")
        # Clients: every user has a password (from the environment) or an NKey; nobody gets in without.
        check(not re.search(r"^\s*no_auth_user\s*:", conf, re.M), f"{name}: no_auth_user admits clients without credentials")
        check(not re.search(r"^authorization\s*\{", conf, re.M), f"{name}: use accounts, not a top-level authorization block")
        users = nats_users(conf)
        check(users, f"{name}: no users in accounts {{ }}: the server would admit clients without credentials")
        system = re.search(r"^system_account:\s*(\w+)", conf, re.M)
        for account, fields in users:
            label = f"{name}: user {fields.get('user') or fields.get('nkey')} (account {account})"
            password = fields.get("password", "")
            check("nkey" in fields or (password.startswith("$") and env.get(password[1:], "").startswith("${")),
                  f"{label} has neither an NKey nor a password from the environment")
            if not (system and account == system.group(1)):
                check(fields.get("permissions") in PERMISSION_SETS.values(),
                      f"{label} has none of the permission sets {sorted(PERMISSION_SETS.values())}")
            if "user" in fields:
                nats_passwords[fields["user"]] = (fields.get("permissions"), env.get(password[1:]))
        nats_server_accepts(name, conf_path, service, env)
        monitoring = re.search(r"^http:\s*(\d+)", conf, re.M)
        health = health_test(service)
        check(monitoring and health and f"127.0.0.1:{monitoring.group(1)}/healthz" in health,
              f"{name}: no enabled healthcheck probing /healthz on its monitoring port (inlet waits for service_healthy)")

    # Inlet: two ingest replicas and two workers, on the cluster, with 3 replicas per stream.
    ingest = sorted(name for name in services if name.startswith("ingest-"))
    check(ingest == ["ingest-1", "ingest-2"], f"expected services ingest-1 and ingest-2, found {ingest}")
    workers = sorted(name for name in services if name.startswith("worker"))
    check(workers == ["worker-1", "worker-2"], f"expected services worker-1 and worker-2, found {workers}")
    targets = {}
    for name in ingest + workers:
        service = services.get(name, {})
        binary = "inlet-ingest" if name.startswith("ingest") else "inlet-worker"
        check((service.get("command") or [None])[0] == binary, f"{name}: command does not run {binary}")
        env = environment_of(service)
        check(env.get("INLET__STREAM__REPLICAS") == "3", f"{name}: INLET__STREAM__REPLICAS is not \"3\"")
        check(all(f"nats://{n}:4222" in env.get("INLET__NATS__URL", "") for n in nats),
              f"{name}: INLET__NATS__URL does not list every NATS node")
        depends = service.get("depends_on") or {}
        check(isinstance(depends, dict) and all((depends.get(n) or {}).get("condition") == "service_healthy" for n in nats),
              f"{name}: does not wait for every NATS node to be healthy")
        # Its own NATS user, with its role's permissions, and the password the NATS nodes have for it.
        credentials = inlet_nats_credentials(name, env)
        methods = [key for key in ("creds_file", "nkey_seed_file", "nkey_seed", "user", "token") if credentials.get(key)]
        if check(methods, f"{name}: connects to NATS without credentials (nats.user and nats.password, …)"):
            user = credentials.get("user")
            permissions, password = nats_passwords.get(user, (None, None))
            check(user is None or permissions == PERMISSION_SETS[binary],
                  f"{name}: NATS user {user} does not have the permission set {PERMISSION_SETS[binary]}")
            check(user is None or (password is not None and credentials.get("password") == password),
                  f"{name}: its NATS password is not the one the NATS nodes are given for {user}")
        section = "INGEST" if binary == "inlet-ingest" else "WORKER"
        listen = env.get(f"INLET__{section}__LISTEN", "")
        admin = env.get(f"INLET__{section}__ADMIN_LISTEN", "")
        for key, value in ((f"INLET__{section}__LISTEN", listen), (f"INLET__{section}__ADMIN_LISTEN", admin)):
            check(value.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"),
                  f"{name}: {key} = {value!r} is not reachable from other containers")
        health = health_test(service) or ""
        check(listen and f"127.0.0.1:{port_of(listen)}/readyz" in health,
              f"{name}: no enabled healthcheck probing /readyz on its listen port {listen}")
        check(admin and port_of(admin) in [str(p) for p in service.get("expose") or []],
              f"{name}: admin (metrics) port of {admin} is not exposed")
        targets[name] = f"{name}:{port_of(admin)}"
    # Exposure: nothing but ingest's public port is published beyond the host's loopback.
    for name, service in services.items():
        public = port_of(environment_of(service).get("INLET__INGEST__LISTEN", "")) if name.startswith("ingest-") else None
        for host, container in published_ports(service):
            check(host in LOOPBACK or (public and container == public),
                  f"{name}: publishes port {container} on {host or 'every address'}; bind it to 127.0.0.1 "
                  "(only ingest's public port may be reachable from other hosts)")

    # PostgreSQL: the workers' shared store, on a named volume, healthy before they start.
    postgres = services.get("postgres", {})
    check(re.fullmatch(r"postgres:(1[5-9]|[2-9]\d)(\.\d+)*(-\w+)?", str(postgres.get("image", ""))),
          f"postgres: image {postgres.get('image')} is not PostgreSQL 15 or later")
    check(any(not source.startswith("./") and target == "/var/lib/postgresql/data"
              for source, target in volumes_of(postgres)), "postgres: its data directory is not on a named volume")
    check("pg_isready" in (health_test(postgres) or ""), "postgres: no enabled pg_isready healthcheck")
    check(not postgres.get("ports"), "postgres: publishes a port (keep it on the compose network)")
    password = environment_of(postgres).get("POSTGRES_PASSWORD", "")
    check(password.startswith("${"), "postgres: POSTGRES_PASSWORD is not taken from the environment")
    for name in workers:
        service = services.get(name, {})
        env = environment_of(service)
        check(env.get("INLET__STORE__BACKEND") == "postgres", f"{name}: INLET__STORE__BACKEND is not postgres")
        check(re.match(r"postgres(ql)?://[^@]*@postgres:5432/", env.get("INLET__STORE__URL", "")),
              f"{name}: INLET__STORE__URL does not point at the postgres service")
        check((service.get("depends_on") or {}).get("postgres", {}).get("condition") == "service_healthy",
              f"{name}: does not wait for postgres to be healthy")
        for port in service.get("ports") or []:
            check(str(port).startswith("127.0.0.1:"), f"{name}: publishes {port} beyond loopback (the operator API)")

    # Prometheus: scrapes every Inlet process on its admin port and loads the alert rules.
    prometheus = services.get("prometheus", {})
    mounts = {target: source for source, target in volumes_of(prometheus) if source.startswith("./")}
    config_path = mounts.get("/etc/prometheus/prometheus.yml")
    if check(config_path, "prometheus: no prometheus.yml mounted"):
        config = yaml.safe_load(read(config_path[2:])) or {}
        scraped = {t for job in config.get("scrape_configs") or [] for sc in job.get("static_configs") or []
                   for t in sc.get("targets") or []}
        for name, target in targets.items():
            check(target in scraped, f"prometheus: does not scrape {target}")
        loaded = [mounts.get(os.path.join("/etc/prometheus", rules)) for rules in config.get("rule_files") or []]
        check("./deploy/prometheus/alerts.yml" in loaded,
              "prometheus: deploy/prometheus/alerts.yml is not mounted and listed in rule_files")
        alerts = yaml.safe_load(read("deploy/prometheus/alerts.yml")) or {}
        check(any(group.get("rules") for group in alerts.get("groups") or []), "deploy/prometheus/alerts.yml has no rules")
        check_alertmanager(services, config)

    # Grafana: the provisioned dashboards folder is the mounted one, and holds the dashboard.
    grafana = services.get("grafana", {})
    mounts = {target: source for source, target in volumes_of(grafana) if source.startswith("./")}
    provisioning = mounts.get("/etc/grafana/provisioning")
    if check(provisioning, "grafana: no provisioning folder mounted"):
        dashboards = os.path.join(provisioning[2:], "dashboards")
        paths = [(provider.get("options") or {}).get("path")
                 for name in yaml_files(dashboards)
                 for provider in (yaml.safe_load(read(os.path.join(dashboards, name))) or {}).get("providers") or []]
        check(any(mounts.get(path) and os.path.exists(os.path.join(ROOT, mounts[path][2:], "inlet.json")) for path in paths),
              "grafana: no dashboard provider points at a mounted folder holding inlet.json")
        check(yaml_files(os.path.join(provisioning[2:], "datasources")), "grafana: no datasource provisioned")

    # Dockerfile: multi-stage, the final image runs as a non-root user.
    dockerfile = read("Dockerfile")
    stages = re.findall(r"^FROM\s", dockerfile, re.M)
    check(len(stages) >= 2 and "COPY --from=" in dockerfile, "Dockerfile: not a multi-stage build")
    final = dockerfile[[m.start() for m in re.finditer(r"^FROM\s", dockerfile, re.M)][-1]:]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    check(users and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: the final image does not run as a non-root user")

    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        result = subprocess.run([docker, "compose", "-f", os.path.join(ROOT, "docker-compose.yml"), "config", "--quiet"],
                                capture_output=True, text=True)
        if check(result.returncode == 0, f"docker compose config: {result.stderr.strip()}"):
            print("check-compose: docker compose config passed")

    for problem in problems:
        print(f"check-compose: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-compose: docker-compose.yml has the production shape ({len(services)} services)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
