"""Build hook: the C engine's Python extension is added here (see firmware/engine/)."""

from setuptools import setup

setup()
