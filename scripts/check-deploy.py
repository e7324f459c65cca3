#!/usr/bin/env python3
"""Holds deploy/ to the code it packages, without building anything (scripts/check-deploy runs it).

- deploy/Dockerfile: two stages (Rust 1.95 on bookworm, then bookworm-slim); the runtime stage
  runs as a non-root user, with /data a volume, HERALD_DATA_DIR=/data, HERALD_LISTEN on 8080,
  a HEALTHCHECK on /readyz, STOPSIGNAL SIGTERM and `herald serve`. The build stage copies every
  directory the code embeds at compile time (include_str!, sqlx::migrate!, askama's templates/),
  each exists, and .dockerignore leaves it in while keeping target/ and .git out.
- deploy/herald.service: `herald serve` as a DynamicUser with StateDirectory=herald and
  HERALD_DATA_DIR=/var/lib/herald, and TimeoutStopSec longer than the shutdown grace.
- Every HERALD_* variable named in the Dockerfile, the unit and deploy/herald.env.example (set or
  commented out) is one Herald reads (src/config/file.rs), so none would stop it at start.
- deploy/examples/herald.toml: every key, commented-out ones included, is a field of FileConfig
  (src/config/file.rs) with a value of its type.
- deploy/examples/mailbox-*.json: JSON objects whose fields are all fields of CreateMailbox
  (src/web/api/mailboxes.rs), with values Herald parses for its enumerations (src/domain), only
  contoso.com addresses, and a curl line for each in deploy/examples/README.md.

Usage: scripts/check-deploy.py [REPO]   (default: this script's repository)
"""

import fnmatch
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
    return ok


def read(rel):
    return (ROOT / rel).read_text(encoding="utf-8")


# --- What the code says -------------------------------------------------------------------

def struct_fields(rel, name):
    """The fields of `pub struct NAME { … }` in REL, as {field: rust type}."""
    text = read(rel)
    match = re.search(r"pub struct " + name + r" \{(.*?)\n\}", text, re.S)
    if not match:
        sys.exit(f"check-deploy: no `pub struct {name}` in {rel}: update scripts/check-deploy.py")
    return dict(re.findall(r"^\s*pub (\w+): (.+?),\s*$", match.group(1), re.M))


def herald_env_names():
    """HERALD_CONFIG and the HERALD_* variables of src/config/file.rs's ENV_KEYS."""
    names = set(re.findall(r'\(\s*"(HERALD_[A-Z0-9_]+)",\s*"[a-z0-9_]+",?\s*\)', read("src/config/file.rs")))
    names |= set(re.findall(r'pub const CONFIG_ENV: &str = "(HERALD_[A-Z_]+)"', read("src/config/mod.rs")))
    if len(names) < 10:
        sys.exit("check-deploy: could not read ENV_KEYS in src/config/file.rs: update scripts/check-deploy.py")
    return names


def string_enums():
    """{EnumName: {values}} of every string_enum! in src/domain."""
    enums = {}
    for path in sorted((ROOT / "src/domain").glob("*.rs")):
        for name, body in re.findall(r"string_enum!\(\s*(?:///[^\n]*\n\s*)*(\w+) \{(.*?)\}\s*\);", path.read_text(), re.S):
            enums[name] = set(re.findall(r'\w+ = "([^"]+)"', body))
    return enums


ENV_NAMES = herald_env_names()


def check_env_names(where, text):
    for name in sorted(set(re.findall(r"\b(HERALD_[A-Z0-9_]+)=", text))):
        check(name in ENV_NAMES, f"{where}: {name} is not a variable Herald reads (src/config/file.rs); it would stop Herald at start")


# --- The unit -----------------------------------------------------------------------------

def unit_settings(text):
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def default_grace():
    """HERALD_SHUTDOWN_GRACE_SECS's default, from the README's configuration table."""
    match = re.search(r"^\| `HERALD_SHUTDOWN_GRACE_SECS` \| `shutdown_grace_secs` \| `(\d+)` \|", read("README.md"), re.M)
    check(match, "README.md: no HERALD_SHUTDOWN_GRACE_SECS row with its default in the configuration table")
    return int(match.group(1)) if match else 20


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    if not match:
        return None
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


unit_text = read("deploy/herald.service")
unit = unit_settings(unit_text)
check_env_names("deploy/herald.service", unit_text)
check(unit.get("ExecStart") == ["/usr/local/bin/herald serve"], "deploy/herald.service: ExecStart is not `/usr/local/bin/herald serve`")
check(unit.get("DynamicUser") == ["yes"], "deploy/herald.service: no DynamicUser=yes")
check(unit.get("StateDirectory") == ["herald"], "deploy/herald.service: no StateDirectory=herald")
check("HERALD_DATA_DIR=/var/lib/herald" in unit.get("Environment", []), "deploy/herald.service: HERALD_DATA_DIR is not /var/lib/herald, the StateDirectory")
check(unit.get("CapabilityBoundingSet") == [""], "deploy/herald.service: CapabilityBoundingSet is not empty")
check(unit.get("EnvironmentFile") == ["-/etc/herald/herald.env"], "deploy/herald.service: EnvironmentFile is not -/etc/herald/herald.env")
check("ProtectProc" not in unit, "deploy/herald.service: ProtectProc hides the other instances' processes, whose claims Herald would then release")
stop = seconds((unit.get("TimeoutStopSec") or [""])[-1])
grace = default_grace()
check(stop is not None and stop > grace, f"deploy/herald.service: TimeoutStopSec must be longer than the shutdown grace ({grace} s)")

env_example = read("deploy/herald.env.example")
check_env_names("deploy/herald.env.example", env_example)
for value in re.findall(r"^#?HERALD_SHUTDOWN_GRACE_SECS=(\d+)", env_example, re.M):
    check(stop is not None and int(value) < stop, "deploy/herald.env.example: HERALD_SHUTDOWN_GRACE_SECS is not below TimeoutStopSec")

# --- The Dockerfile -----------------------------------------------------------------------

def instructions(text):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


dockerfile_text = read("deploy/Dockerfile")
check_env_names("deploy/Dockerfile", dockerfile_text)
stages = []
for op, args in instructions(dockerfile_text):
    if op == "FROM":
        stages.append({"FROM": args, "ops": []})
    elif stages:
        stages[-1]["ops"].append((op, args))
if check(len(stages) >= 2, "deploy/Dockerfile: not multi-stage (a build stage, then a runtime stage)"):
    build, runtime = stages[0], stages[-1]
    check(re.fullmatch(r"rust:1\.95(\.\d+)?-bookworm AS \w+", build["FROM"], re.I), "deploy/Dockerfile: the build stage is not FROM rust:1.95-bookworm AS …")
    check(runtime["FROM"] == "debian:bookworm-slim", "deploy/Dockerfile: the runtime stage is not FROM debian:bookworm-slim")
    ops = runtime["ops"]

    def last(op):
        found = [args for o, args in ops if o == op]
        return found[-1] if found else None

    env = " ".join(args for o, args in ops if o == "ENV")
    user = last("USER")
    check(user and user.split(":")[0] not in ("root", "0"), "deploy/Dockerfile: the runtime stage does not run as a non-root USER")
    check(last("VOLUME") and "/data" in last("VOLUME"), "deploy/Dockerfile: /data is not a VOLUME")
    check("HERALD_DATA_DIR=/data" in env, "deploy/Dockerfile: ENV HERALD_DATA_DIR=/data missing")
    check("HERALD_LISTEN=0.0.0.0:8080" in env, "deploy/Dockerfile: ENV HERALD_LISTEN=0.0.0.0:8080 missing")
    check(last("EXPOSE") and "8080" in last("EXPOSE").split(), "deploy/Dockerfile: EXPOSE 8080 missing")
    check(last("HEALTHCHECK") and "/readyz" in last("HEALTHCHECK"), "deploy/Dockerfile: no HEALTHCHECK on /readyz")
    check(last("STOPSIGNAL") == "SIGTERM", "deploy/Dockerfile: STOPSIGNAL is not SIGTERM")
    check(last("ENTRYPOINT") == '["herald"]', 'deploy/Dockerfile: ENTRYPOINT is not ["herald"]')
    check(last("CMD") == '["serve"]', 'deploy/Dockerfile: CMD is not ["serve"]')
    check(any(o == "COPY" and args.startswith("--from=") for o, args in ops), "deploy/Dockerfile: the runtime stage copies nothing from the build stage")
    healthcheck = last("HEALTHCHECK") or ""
    if "curl" in healthcheck:
        check(re.search(r"apt-get install[^&]*\bcurl\b", " ".join(a for o, a in ops if o == "RUN")), "deploy/Dockerfile: the HEALTHCHECK uses curl, which the runtime stage does not install")

    # What the build copies in: it must exist, pass .dockerignore, and hold all the code embeds.
    ignored = [l.strip().rstrip("/") for l in read(".dockerignore").splitlines() if l.strip() and not l.startswith("#")]
    for needed in ("target", ".git"):
        check(needed in ignored, f".dockerignore: {needed} is not excluded")
    copied = set()
    for op, args in build["ops"]:
        if op == "COPY" and not args.startswith("--from="):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                top = source.rstrip("/").split("/")[0]
                copied.add(top)
                check((ROOT / source).exists(), f"deploy/Dockerfile: COPY {source}: no such file in the repository")
                check(not any(fnmatch.fnmatch(top, pattern) for pattern in ignored), f"deploy/Dockerfile: COPY {source}, which .dockerignore excludes")
    embedded = {"Cargo.toml", "Cargo.lock", "src", "templates"}
    for path in (ROOT / "src").rglob("*.rs"):
        text = path.read_text(encoding="utf-8")
        for rel in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', text):
            target = (path.parent / rel).resolve()
            if ROOT.resolve() in target.parents:
                embedded.add(target.relative_to(ROOT.resolve()).parts[0])
        for rel in re.findall(r'sqlx::migrate!\("\./([^"/]+)', text):
            embedded.add(rel)
    manifest = read("Cargo.toml")
    if "[[bench]]" in manifest:
        embedded.add("benches")
    for top in sorted(embedded - copied):
        check(False, f"deploy/Dockerfile: the build stage does not COPY {top}, which the build reads")

# --- The example configuration ------------------------------------------------------------

TOML_TYPES = {"String": str, "bool": bool, "u64": int, "u32": int, "u16": int, "i64": int,
              "Vec<String>": list, "toml::Table": dict}
file_config = struct_fields("src/config/file.rs", "FileConfig")
toml_text = read("deploy/examples/herald.toml")
# Commented-out settings are examples too: read them as if they were set.
uncommented = re.sub(r"^# ?([a-z_]+ = )", r"\1", toml_text, flags=re.M)
try:
    settings = tomllib.loads(uncommented)
except tomllib.TOMLDecodeError as e:
    settings = {}
    check(False, f"deploy/examples/herald.toml (its commented-out settings included) does not parse: {e}")
check(settings, "deploy/examples/herald.toml sets nothing")
for key, value in settings.items():
    rust = file_config.get(key)
    if check(rust, f"deploy/examples/herald.toml: `{key}` is not a setting (src/config/file.rs, FileConfig)"):
        inner = re.fullmatch(r"Option<(.+)>", rust).group(1)
        want = TOML_TYPES.get(inner)
        check(want is None or (isinstance(value, want) and not (want is int and isinstance(value, bool))),
              f"deploy/examples/herald.toml: `{key}` should be {inner}, not {type(value).__name__}")
if "shutdown_grace_secs" in settings:
    check(stop is not None and settings["shutdown_grace_secs"] < stop, "deploy/examples/herald.toml: shutdown_grace_secs is not below the unit's TimeoutStopSec")

# --- The example mailboxes ----------------------------------------------------------------

create_mailbox = struct_fields("src/web/api/mailboxes.rs", "CreateMailbox")
enums = string_enums()
ENUM_FIELDS = {"auth": "AuthKind", "provider": "Provider", "credential": "CredentialKind",
               "transport": "TransportKind", "security": "Security", "client_auth": "ClientAuth", "cloud": "Cloud"}
examples_readme = read("deploy/examples/README.md")
mailboxes = sorted((ROOT / "deploy/examples").glob("mailbox-*.json"))
check(len(mailboxes) >= 4, "deploy/examples: fewer than four mailbox-*.json")
for path in mailboxes:
    where = f"deploy/examples/{path.name}"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        check(False, f"{where}: not JSON: {e}")
        continue
    if not check(isinstance(body, dict), f"{where}: not a JSON object"):
        continue
    for field in ("name", "auth"):
        check(field in body, f"{where}: `{field}` is required")
    for field, value in body.items():
        check(field in create_mailbox, f"{where}: `{field}` is not a field of POST /api/v1/mailboxes (CreateMailbox)")
        enum = ENUM_FIELDS.get(field)
        if enum:
            allowed = enums.get(enum, set()) | ({"post"} if field == "client_auth" else set())
            check(value in allowed, f"{where}: `{field}` is {value!r}, not one of {sorted(allowed)}")
    for text in (v for v in body.values() if isinstance(v, str)):
        for address in re.findall(r"[\w.+-]+@([\w.-]+)", text):
            check(address == "contoso.com", f"{where}: {text!r} is not a placeholder address (@contoso.com)")
    check(f"-d @deploy/examples/{path.name}" in examples_readme, f"deploy/examples/README.md: no curl line for {path.name}")

for missing in sorted(set(ENUM_FIELDS.values()) - set(enums)):
    check(False, f"check-deploy: no string_enum! {missing} in src/domain: update scripts/check-deploy.py")

if failures:
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    sys.exit(1)
print(f"deploy/ agrees with the code: Dockerfile, .dockerignore, herald.service, herald.env.example, "
      f"herald.toml ({len(settings)} settings), {len(mailboxes)} mailbox examples")
