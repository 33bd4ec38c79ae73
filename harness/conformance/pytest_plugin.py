"""pytest plugin: `pytest --fwbench-backend NAME` adds one test per conformance check to any test run."""
from __future__ import annotations

import pytest

NOTES = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fwbench", "fwbench backend conformance")
    group.addoption("--fwbench-backend", action="append", default=[], metavar="NAME",
                    help="run the fwbench conformance kit on this backend (registered name or module.path:ClassName); "
                         "may be given more than once")
    group.addoption("--fwbench-device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="device for --fwbench-backend (default cpu)")


@pytest.hookimpl(tryfirst=True)  # before -k and --deselect filter the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Append test_conformance[CHECK] for every check and every --fwbench-backend."""
    names = config.getoption("fwbench_backend")
    if not names:
        return
    from fwbench.backends.base import BackendError  # here, so a plain pytest run never imports fwbench
    from fwbench.harness.conformance.checks import battery_for
    from fwbench.harness.conformance.runner import load

    config.stash[NOTES] = []
    for name in names:
        try:
            cls = load(name)[2]
        except BackendError as e:  # a name that cannot load is a usage error, not one failure per check
            raise pytest.UsageError(f"--fwbench-backend {name}: {e}") from None
        subject = Subject(name, config.getoption("fwbench_device"))
        for check in battery_for(cls):
            label = check.name if len(names) == 1 else f"{name} {check.name}"
            test = f"test_conformance[{label}]"
            items.append(ConformanceItem.from_parent(session, name=test, nodeid=f"fwbench::{test}",
                                                     subject=subject, check=check))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The rows that passed with a note (tie conventions, near-repeatability), which pytest would not show."""
    notes = config.stash.get(NOTES, [])
    if notes:
        terminalreporter.section("fwbench conformance notes")
        for line in notes:
            terminalreporter.write_line(line)


class Subject:
    """One backend under test; its context is built by the first test that needs it, and shared."""

    def __init__(self, name: str, device: str):
        self.name, self.device = name, device
        self._context = None
        self._error: str | None = None

    def context(self):
        """The shared Context, or pytest.fail with the one-line reason it cannot be built (a missing GPU, say)."""
        if self._context is None and self._error is None:
            from fwbench.backends.base import BackendError
            from fwbench.harness.conformance.runner import load, pinned, prepare
            try:
                pinned(load(self.name)[2])
                self._context = prepare(self.name, self.device)
            except BackendError as e:
                self._error = str(e)
        if self._error is not None:
            pytest.fail(f"fwbench backend {self.name}: {self._error}", pytrace=False)
        return self._context


class ConformanceItem(pytest.Item):
    """One conformance check as a test: fail fails, "not supported" skips, a note passes and is listed."""

    def __init__(self, *, subject: Subject, check, **kwargs):
        super().__init__(**kwargs)
        self.subject, self.check = subject, check

    def runtest(self) -> None:
        from fwbench.harness.conformance.runner import run_check
        result = run_check(self.subject.context(), self.check)
        self.user_properties.append(("fwbench_conformance", result.to_dict()))
        if result.status == "fail":
            bound = "" if result.bound is None else f" (bound {result.bound:g})"
            hint = f"\nhint: {result.hint}" if result.hint else ""  # one row alone: its own tensors' hints only
            pytest.fail(f"{result.detail}{bound}{hint}", pytrace=False)
        if result.status == "not supported":
            pytest.skip(f"not supported: {result.detail}")
        if result.status == "note":
            self.config.stash[NOTES].append(f"{self.subject.name} {self.check.name}: {result.detail}")

    def reportinfo(self):
        return self.path, None, self.name
