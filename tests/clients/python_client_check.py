"""Checks the Python client that openapi-python-client generated from the served /openapi.json.

Run by scripts/api-clients as `python python_client_check.py PACKAGE_DIR BASE_URL TOKEN`: imports
every module of the generated package, then makes a few read-only calls against the running
embedded default and requires each answer to parse into the documented model, with no field the
document does not name (such a field would land in a model's `additional_properties`).
"""

import importlib
import pkgutil
import sys
from pathlib import Path


def imports_every_module(package_dir: Path) -> object:
    sys.path.insert(0, str(package_dir.parent))
    package = importlib.import_module(package_dir.name)
    names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    for name in names:
        importlib.import_module(name)
    print(f"python client: imported {package.__name__} and its {len(names)} modules")
    return package


def undocumented_fields(value: object, where: str) -> list[str]:
    """Paths of fields that landed in `additional_properties` of a model that declares fields."""
    found: list[str] = []
    attrs = getattr(type(value), "__attrs_attrs__", None)
    if attrs is not None:
        declared = [a.name for a in attrs if a.name != "additional_properties"]
        extra = getattr(value, "additional_properties", {})
        # A model without declared fields is a free-form object (audit `before`/`after`).
        if declared and extra:
            found += [f"{where}.{key}" for key in extra]
        for name in declared:
            found += undocumented_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += undocumented_fields(item, f"{where}[{i}]")
    return found


def live_calls(package_name: str, base_url: str, token: str) -> None:
    api = lambda module: importlib.import_module(f"{package_name}.api.{module}")  # noqa: E731
    models = importlib.import_module(f"{package_name}.models")
    client = importlib.import_module(package_name).AuthenticatedClient(
        base_url=base_url, token=token, raise_on_unexpected_status=True
    )
    me = "admin@contoso.com"
    calls = [
        ("GET /v1/me", api("users.get_me").sync_detailed(client=client), 200, models.UserDto),
        ("GET /v1/users", api("users.list_users").sync_detailed(client=client), 200, models.UserPageDto),
        ("GET /v1/users/{email}", api("users.get_user").sync_detailed(me, client=client), 200, models.UserDto),
        ("GET /v1/users/{email} (unknown)",
         api("users.get_user").sync_detailed("nobody@contoso.com", client=client), 404, models.Problem),
        ("GET /v1/integration", api("integration.get_integration").sync_detailed(client=client), 200,
         models.IntegrationDto),
        ("GET /v1/integration/capture-policy",
         api("integration.get_capture_policy").sync_detailed(client=client), 200, models.CapturePolicyDto),
        ("GET /v1/audit", api("audit.audit_log").sync_detailed(client=client), 200, models.AuditPageDto),
        ("GET /v1/sync/runs", api("sync.sync_runs").sync_detailed(client=client), 200, models.SyncRunPageDto),
        ("GET /v1/users/{email}/messages", api("mail.list_messages").sync_detailed(me, client=client, limit=5),
         200, models.MessagePageDto),
    ]
    problems = []
    for what, response, status, model in calls:
        if response.status_code != status or not isinstance(response.parsed, model):
            problems.append(f"{what}: {response.status_code} {type(response.parsed).__name__}, "
                            f"expected {status} {model.__name__}: {response.content[:300]!r}")
            continue
        problems += [f"{what}: undocumented field {path}"
                     for path in undocumented_fields(response.parsed, model.__name__)]
    if problems:
        sys.exit("python client: " + "\n  ".join(["live calls failed:", *problems]))
    print(f"python client: {len(calls)} live calls parsed into their documented models")


if __name__ == "__main__":
    package_dir, base_url, token = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    package = imports_every_module(package_dir)
    live_calls(package.__name__, base_url, token)
