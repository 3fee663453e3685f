"""Environments' target roots: provisioning (create + writability check) and purging.

Used by the registry service (in a worker thread) and the embedded admin (inline).
"""

from ._provision import RootCheck, provision_target_root, purge_target_root

__all__ = ["RootCheck", "provision_target_root", "purge_target_root"]
