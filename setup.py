"""The package map setuptools cannot express in pyproject.toml alone: three source folders
form one ``writebehind`` namespace, and setuptools finds each folder's subpackages."""

from setuptools import find_packages, setup

ROOTS = {"writebehind": "actors", "writebehind.harness": "harness", "writebehind.chaos": "chaos"}

setup(
    package_dir=ROOTS,
    packages=[
        name
        for package, folder in ROOTS.items()
        for name in [package, *(f"{package}.{sub}" for sub in find_packages(folder))]
    ],
)
