"""Watching processes from a test: whether a port is free, whether a process still runs."""

from __future__ import annotations

import socket

import psutil


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` any more (a new listener could bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def running(process: psutil.Process) -> bool:
    """Not exited. An exited orphan stays a zombie until its new parent (init) reaps it."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
