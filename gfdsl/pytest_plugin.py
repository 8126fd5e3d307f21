"""A pytest plugin: `pytest specs/` checks every `*.gfn` file it finds.

Registered through the `pytest11` entry point, so any project with gfdsl installed
gets it. A failing spec reports its caret diagnostics, not a traceback. Folders of
deliberately broken specs opt out with `collect_ignore` in their conftest.py.
"""

from __future__ import annotations

import pytest

from gfdsl.errors import GfdslError


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".gfn":
        return GfnFile.from_parent(parent, path=file_path)
    return None


class GfnFile(pytest.File):
    def collect(self):
        yield GfnCheck.from_parent(self, name="gfdsl check")


class GfnCheck(pytest.Item):
    def runtest(self) -> None:
        from gfdsl.driver import check_file

        check_file(self.path)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GfdslError):
            return excinfo.value.render()
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"gfdsl check {self.path.name}"
