"""Renders deploy/kubernetes for the tests, with no kustomize binary at hand (none can be
installed here): a kustomization's resources in order, then its patches applied as strategic
merges do for these manifests (maps merged key by key, lists of named items merged by name,
other lists replaced).

    kube.py render DIR       YAML of every resource DIR's kustomization makes
    kube.py pod DIR NAME     the DaemonSet's pod template as a Pod named NAME, for podman kube play
"""
import copy
import os
import sys

import yaml


def merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(item, dict) and "name" in item for item in base + patch)):
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            same = [i for i, old in enumerate(merged) if old["name"] == item["name"]]
            if same:
                merged[same[0]] = merge(merged[same[0]], item)
            else:
                merged.append(item)
        return merged
    return patch


def key(doc):
    return (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))


def render(directory):
    with open(os.path.join(directory, "kustomization.yaml")) as file:
        kustomization = yaml.safe_load(file)
    docs = []
    for resource in kustomization.get("resources", []):
        path = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(path):
            docs.extend(render(path))
        else:
            with open(path) as file:
                docs.extend(doc for doc in yaml.safe_load_all(file) if doc)
    for patch in kustomization.get("patches", []):
        with open(os.path.join(directory, patch["path"])) as file:
            change = yaml.safe_load(file)
        targets = [i for i, doc in enumerate(docs) if key(doc) == key(change)]
        if not targets:
            sys.exit(f"patch {patch['path']} matches no resource")
        docs[targets[0]] = merge(docs[targets[0]], change)
    return docs


def main():
    command, directory = sys.argv[1], sys.argv[2]
    docs = render(directory)
    if command == "render":
        yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    elif command == "pod":
        daemonset = next(doc for doc in docs if doc["kind"] == "DaemonSet")
        template = daemonset["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": sys.argv[3], "labels": template["metadata"]["labels"]},
               "spec": template["spec"]}
        yaml.safe_dump(pod, sys.stdout, sort_keys=False)
    else:
        sys.exit(f"unknown command {command}")


main()
