"""Packaging for rtmbotd: python-rtmbot plugins as a systemd service."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "rtmbotd" / "__init__.py").read_text()).group(1)

setup(
    name="rtmbotd",
    version=VERSION,
    description="Run python-rtmbot style Slack bot plugins as a proper Linux service",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["rtmbotd", "rtmbotd.*"]),
    include_package_data=True,
    package_data={"rtmbotd": ["py.typed"]},
    install_requires=[
        "slack_sdk>=3.27,<4",
        "websockets>=13,<18",
        "aiohttp>=3.9,<4",
        "PyYAML>=6,<7",
        "python-daemon>=3,<4",
        "SQLAlchemy>=2.0,<2.2",
        "prometheus_client>=0.20,<1",   # imported only when METRICS is set
        "cronsim>=2.7,<3",              # cron expressions in crontable and Job
    ],
    extras_require={
        "postgresql": ["psycopg[binary]>=3.1,<4"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "psycopg[binary]>=3.1,<4",
        ],
    },
    entry_points={
        "console_scripts": ["rtmbotd = rtmbotd.cli:main"],
        "pytest11": ["rtmbotd = rtmbotd.testing.pytest_plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Communications :: Chat",
    ],
)
