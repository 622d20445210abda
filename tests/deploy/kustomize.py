"""The kustomize features deploy/k8s uses, rendered in Python (the machine has no kustomize).

Exactly these, and nothing else: a kustomization.yaml with any other field is refused, so
the manifests cannot quietly depend on a feature this renderer would skip.

- `resources`: YAML files (one or more documents) and directories with a kustomization.yaml;
- `namespace`: set on every namespaced resource;
- `images`: `name` -> `newName` / `newTag` on every container's and init container's image;
- `replicas`: `name` -> `count` on Deployments and StatefulSets;
- `patches`: `path:` strategic-merge patches, aimed at the resource with the patch's
  apiVersion, kind and name. Maps merge key by key and lists are replaced whole, which is
  what kustomize does with lists that have no merge key (an Ingress's `rules` and `tls`).
  Lists kustomize merges by key (containers, env, ports, volumes...), `null` deletions and
  `$patch` directives are refused rather than rendered differently from kustomize.

Every `images` and `replicas` entry and every patch must change something: a typo in a
name is an error, not a silent no-op.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
    }
)
# Lists a strategic-merge patch merges item by item (by a key such as `name`): not supported.
MERGED_BY_KEY = frozenset(
    {
        "containers",
        "initContainers",
        "ephemeralContainers",
        "env",
        "ports",
        "volumes",
        "volumeMounts",
        "imagePullSecrets",
    }
)
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet"})


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not do, or does it wrong."""


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` would print (in file order)."""
    kustomization = _load_mapping(directory / "kustomization.yaml")
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unsupported)}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{directory}: kind must be Kustomization")

    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(_load_all(path))
    _refuse_duplicates(resources, directory)

    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(f"{directory}: only `path:` patches are supported: {patch_entry}")
        _apply_patch(resources, _load_one(directory / patch_entry["path"]))
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    for replicas in kustomization.get("replicas", []):
        _set_replicas(resources, replicas)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED_KINDS:
                resource["metadata"]["namespace"] = namespace
    return resources


def identity(resource: Resource) -> tuple[str, str, str]:
    """(group of the apiVersion, kind, name): how kustomize tells resources apart."""
    group = resource["apiVersion"].rpartition("/")[0]
    return group, resource["kind"], resource["metadata"]["name"]


def containers(resource: Resource) -> list[dict[str, Any]]:
    """The containers and init containers of a workload's pod template (none otherwise)."""
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def split_image(image: str) -> tuple[str, str | None]:
    """(name, tag or digest): `registry:5000/app:1.2` -> (`registry:5000/app`, `1.2`)."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, digest
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, None


# --- internals ---------------------------------------------------------------------------------


def _load_all(path: Path) -> list[Resource]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
            raise KustomizeError(f"{path}: every document needs apiVersion, kind and metadata")
    return documents


def _load_mapping(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise KustomizeError(f"{path}: not a mapping")
    return loaded


def _load_one(path: Path) -> Resource:
    documents = _load_all(path)
    if len(documents) != 1:
        raise KustomizeError(f"{path}: expected one document, found {len(documents)}")
    return documents[0]


def _refuse_duplicates(resources: list[Resource], directory: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        key = identity(resource)
        if key in seen:
            raise KustomizeError(f"{directory}: {key} appears twice")
        seen.add(key)


def _apply_patch(resources: list[Resource], patch: Resource) -> None:
    targets = [r for r in resources if identity(r) == identity(patch)]
    if len(targets) != 1:
        raise KustomizeError(f"patch for {identity(patch)} matches {len(targets)} resources")
    target = targets[0]
    merged = _merge(target, patch, path="")
    target.clear()
    target.update(merged)


def _merge(base: Any, patch: Any, path: str) -> Any:
    if isinstance(patch, dict):
        if "$patch" in patch or any(str(key).startswith("$") for key in patch):
            raise KustomizeError(f"{path}: $-directives are not supported")
        merged = copy.deepcopy(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            where = f"{path}.{key}" if path else str(key)
            if value is None:
                raise KustomizeError(f"{where}: null (delete) is not supported")
            if isinstance(value, list) and key in MERGED_BY_KEY:
                raise KustomizeError(f"{where}: kustomize merges this list by key; not supported")
            merged[key] = _merge(merged.get(key), value, where)
        return merged
    return copy.deepcopy(patch)


def _set_image(resources: list[Resource], entry: dict[str, str]) -> None:
    unsupported = set(entry) - {"name", "newName", "newTag"}
    if unsupported or "name" not in entry:
        raise KustomizeError(f"images entry {entry}: only name, newName and newTag")
    changed = 0
    for resource in resources:
        for container in containers(resource):
            name, tag = split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            tag = entry.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name
            changed += 1
    if not changed:
        raise KustomizeError(f"images entry {entry['name']!r} matches no container")


def _set_replicas(resources: list[Resource], entry: dict[str, Any]) -> None:
    if set(entry) != {"name", "count"} or not isinstance(entry["count"], int):
        raise KustomizeError(f"replicas entry {entry}: name and an integer count")
    matched = [
        r
        for r in resources
        if r["kind"] in SCALABLE_KINDS and r["metadata"]["name"] == entry["name"]
    ]
    if not matched:
        raise KustomizeError(f"replicas entry {entry['name']!r} matches no Deployment")
    for resource in matched:
        resource["spec"]["replicas"] = entry["count"]
