"""Test lab: a throwaway PKI, a private MariaDB server and real clients for integration tests.

Import it as ``lab`` (tests/conftest.py puts ``tests/`` on ``sys.path``).
"""

from .mariadb import free_port

__all__ = ["free_port"]
