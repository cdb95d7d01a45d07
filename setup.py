"""Packaging for twistgw.

The shipped plugins live under plugins/ and install as top-level packages named after
themselves (twistgw_mock, ...), never as a package called ``plugins``; each is declared in
the ``twistgw`` entry-point group exactly as a third-party plugin would be.  The demo
config under examples/demo/ installs as ``twistgw.demo`` so a non-editable install finds it.
"""

from setuptools import find_packages, setup

SHIPPED_PLUGINS = {
    "mock": "twistgw_mock",
    "mapping": "twistgw_mapping",
    "lambda": "twistgw_lambda",
    "http": "twistgw_http",
    "access": "twistgw_access",
    "auth": "twistgw_auth",
    "validation": "twistgw_validation",
    "cors": "twistgw_cors",
    "tls": "twistgw_tls",
    "websocket": "twistgw_websocket",
    "admin": "twistgw_admin",
    "otel": "twistgw_otel",
}

setup(
    name="twistgw",
    version="0.1.0",
    description="An on-prem API gateway that serves Amazon API Gateway definitions",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["twistgw", "twistgw.*"])
    + ["twistgw.demo"]
    + list(SHIPPED_PLUGINS.values())
    + ["twisted.plugins"],
    package_dir={
        "twistgw.demo": "examples/demo",
        **{pkg: f"plugins/{pkg}" for pkg in SHIPPED_PLUGINS.values()},
    },
    package_data={"twistgw": ["py.typed"], "twistgw.demo": ["*.yaml", "*.json"]},
    include_package_data=False,
    install_requires=[
        "twisted[tls]>=26.4.0",
        "treq>=24.9",
        "pluggy>=1.5",
        "attrs>=23.1",
        "cryptography>=42",
        "PyYAML>=6.0",
        "PyJWT>=2.13,<3",
        "jsonschema>=4.18",
        "autobahn>=24.4",
        "prometheus_client>=0.20",
        # llhttp (Node.js's HTTP/1.1 parser) behind the listeners and the outbound fast
        # client: strict framing rules written and fuzzed by others, a few µs per message.
        "httptools>=0.6.4",
        # orjson: mapping templates parse request and response bodies with it first (a
        # third of json.loads's time; anything it could answer otherwise goes to json).
        "orjson>=3.10",
    ],
    extras_require={
        # OpenTelemetry export (plugins.settings.otel): protobuf and requests are heavy and
        # most gateways do not trace, so they are opt-in; the plugin is inert without them.
        "otel": ["opentelemetry-sdk>=1.25", "opentelemetry-exporter-otlp-proto-http>=1.25"],
    },
    entry_points={
        "twistgw": [f"{name} = {pkg}" for name, pkg in SHIPPED_PLUGINS.items()],
        "console_scripts": ["twistgw = twistgw.cli:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)
