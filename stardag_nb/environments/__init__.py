"""Environments' target roots: what a root URI means and which are refused, provisioning
(create + writability check) and purging exactly the recorded outputs.

Run where the data is: the registry service for the object-store roots it handles, the
client (CLI, notebook) for local paths, the embedded admin inline.
"""

from ._provision import RootCheck, default_protected, provision_target_root, purge_outputs
from ._roots import (
    LOCAL_PROTOCOLS,
    SERVICE_ROOT_PROTOCOLS,
    ParsedRoot,
    RootRefused,
    is_under,
    local_forms,
    parse_root,
    root_refusal,
    roots_overlap,
)

__all__ = [
    "LOCAL_PROTOCOLS",
    "SERVICE_ROOT_PROTOCOLS",
    "ParsedRoot",
    "RootCheck",
    "RootRefused",
    "default_protected",
    "is_under",
    "local_forms",
    "parse_root",
    "provision_target_root",
    "purge_outputs",
    "root_refusal",
    "roots_overlap",
]
