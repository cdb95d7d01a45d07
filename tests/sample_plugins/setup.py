"""Packaging for twistgw-sample-plugin: a third-party twistgw plugin, shaped like a real one.

It lives in twistgw's test tree only so that the end-to-end tests can install it the way an
operator installs any plugin (``pip install ./tests/sample_plugins``) and enable it by name.
A published plugin would also declare ``install_requires=["twistgw>=0.1"]``; this one does
not, because tox installs it as a test dependency *before* it installs twistgw itself.
"""

from setuptools import setup

setup(
    name="twistgw-sample-plugin",
    version="1.0.0",
    description="A sample twistgw plugin implementing every hook from outside the package",
    license="MIT",
    python_requires=">=3.11",
    packages=["twistgw_sample"],
    package_data={"twistgw_sample": ["py.typed"]},
    entry_points={"twistgw": ["sample = twistgw_sample"]},
)
