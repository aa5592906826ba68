"""The hazard log (docs/safety/hazard-log.md) names real controls and real tests.

Each hazard is a ``### H-NN Title`` section with the fields below, in this order, each a
top-level bullet ``- **Field:** text`` (continued on indented lines). This test fails,
naming the hazard and the problem, when a hazard:

- lacks a field, repeats one, or has them out of order;
- has a severity that is not on the log's scale;
- names no repository path in backticks in its **Control**, or a path that does not exist;
- names no test in its **Tests**, or a test that does not exist: each node id
  (``tests/x.py::test_y``, ``tests/x.py::TestClass::test_y``, a parametrised test by its
  function name, with or without ``[ids]``) must be a file of the repository that defines
  that function (read with ``ast``, nothing is imported or run);
- still says ``TODO`` anywhere.

It also checks that hazard ids are unique and run H-01, H-02, … without gaps, that the
introduction defines the severity scale and the rule that a change touching a control
updates its row, and that README.md links the log. No database is needed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "docs" / "safety" / "hazard-log.md"

FIELDS = (
    "What goes wrong",
    "Causes",
    "Effect on the patient",
    "Severity",
    "Control",
    "Tests",
    "Residual risk",
)
SEVERITIES = ("catastrophic", "major", "considerable", "significant", "minor")

HAZARD_HEADING = re.compile(r"^### (H-(\d+))[ \t]+(\S.*)$")
ANY_HEADING = re.compile(r"^#{1,3} ")
FIELD_LINE = re.compile(r"^- \*\*([^*]+?):\*\*(.*)$")
BACKTICKED = re.compile(r"`([^`\n]+)`")
# A repository path: relative, made of ordinary name characters, with a folder part or a
# file extension (README.md, gunicorn.conf.py, pumps/, templates/emails/).
PATH_WITH_FOLDER = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/(?:[A-Za-z0-9_.-]+)?$")
PATH_FILE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(?:py|md|html|txt|yml|yaml|toml|cfg|ini|json|csv|js|css|sql)$")
NODE_ID = re.compile(r"^(tests/[A-Za-z0-9_./-]+\.py)::([A-Za-z_]\w*)(?:::([A-Za-z_]\w*))?(?:\[[^\]]*\])?$")


# ------------------------------------------------------------------------ parsing


@dataclass
class Hazard:
    id: str
    number: int
    title: str
    line: int
    fields: list[tuple[str, str]] = field(default_factory=list)  # in document order
    stray: list[str] = field(default_factory=list)  # lines that belong to no field
    text: str = ""

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None


def parse_hazards(text: str) -> list[Hazard]:
    """Every ``### H-NN`` section of the log, with its fields."""
    hazards: list[Hazard] = []
    current: Hazard | None = None
    lines: list[str] = []

    def close() -> None:
        if current is None:
            return
        current.text = "\n".join(lines)
        key, value = None, []
        for raw in lines:
            match = FIELD_LINE.match(raw)
            if match:
                if key is not None:
                    current.fields.append((key, " ".join(value).strip()))
                key, value = match.group(1).strip(), [match.group(2).strip()]
            elif raw.strip() == "":
                continue
            elif key is not None and raw.startswith((" ", "\t")):
                value.append(raw.strip())
            else:
                current.stray.append(raw.strip())
        if key is not None:
            current.fields.append((key, " ".join(value).strip()))

    for number, raw in enumerate(text.splitlines(), start=1):
        heading = HAZARD_HEADING.match(raw)
        if heading:
            close()
            current = Hazard(heading.group(1), int(heading.group(2)), heading.group(3).strip(), number)
            hazards.append(current)
            lines = []
        elif ANY_HEADING.match(raw):
            close()
            current, lines = None, []
        elif current is not None:
            lines.append(raw)
    close()
    return hazards


def repository_paths(control: str) -> list[str]:
    """The backticked spans of a **Control** that are repository paths."""
    out = []
    for span in BACKTICKED.findall(control):
        span = span.strip()
        if span.startswith("/") or "//" in span:
            continue  # a URL path such as /health/, not a file of the repository
        if PATH_WITH_FOLDER.match(span) or PATH_FILE.match(span):
            out.append(span)
    return out


def test_names(tests: str) -> list[str]:
    """The backticked spans of a **Tests** field that name something under tests/."""
    return [span.strip() for span in BACKTICKED.findall(tests) if span.strip().startswith("tests/")]


test_names.__test__ = False  # a helper, not a test


def _defined_tests(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """Module-level test names and each class's method names, read with ``ast``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    functions: set[str] = set()
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.add(node.name)
        elif isinstance(node, ast.Assign):  # test_x = make_test(...)
            functions.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {
                sub.name for sub in node.body if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return functions, classes


def node_id_problem(node_id: str, root: Path = ROOT) -> str | None:
    """Why ``node_id`` does not name a test of the repository, or None when it does."""
    match = NODE_ID.match(node_id)
    if not match:
        return f"`{node_id}` is not a pytest node id (tests/x.py::test_y or tests/x.py::TestClass::test_y)"
    file_part, first, second = match.groups()
    path = root / file_part
    if not path.is_file():
        return f"`{node_id}`: no file {file_part}"
    try:
        functions, classes = _defined_tests(path)
    except SyntaxError as exc:
        return f"`{node_id}`: {file_part} does not parse ({exc.msg}, line {exc.lineno})"
    if second is None:
        if not first.startswith("test"):
            return f"`{node_id}`: {first} is not a test function (its name does not start with 'test')"
        if first not in functions:
            return f"`{node_id}`: no test function {first} in {file_part}"
        return None
    if not first.startswith("Test"):
        return f"`{node_id}`: {first} is not a test class (its name does not start with 'Test')"
    if first not in classes:
        return f"`{node_id}`: no class {first} in {file_part}"
    if not second.startswith("test") or second not in classes[first]:
        return f"`{node_id}`: no test method {second} in class {first} of {file_part}"
    return None


def hazard_problems(hazard: Hazard, root: Path = ROOT) -> list[str]:
    """Everything wrong with one hazard, each as a sentence."""
    problems: list[str] = []
    names = [name for name, _ in hazard.fields]
    for name in FIELDS:
        if name not in names:
            problems.append(f"missing field **{name}:**")
        elif names.count(name) > 1:
            problems.append(f"field **{name}:** given {names.count(name)} times")
    unknown = [name for name in names if name not in FIELDS]
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} (the fields are: {', '.join(FIELDS)})")
    known = [name for name in names if name in FIELDS]
    if not problems and known != list(FIELDS):
        problems.append(f"fields out of order: {', '.join(known)} (expected: {', '.join(FIELDS)})")
    if hazard.stray:
        problems.append(f"text outside any field: {hazard.stray[0][:80]!r}")
    for name, value in hazard.fields:
        if name in FIELDS and not value:
            problems.append(f"field **{name}:** is empty")

    severity = (hazard.get("Severity") or "").strip().rstrip(".").lower()
    if hazard.get("Severity") is not None and severity not in SEVERITIES:
        problems.append(f"severity {hazard.get('Severity')!r} is not one of {', '.join(SEVERITIES)}")

    control = hazard.get("Control")
    if control is not None:
        paths = repository_paths(control)
        if not paths:
            problems.append("**Control:** names no repository path in backticks (e.g. `pumps/projection.py`)")
        for path in paths:
            if not (root / path.rstrip("/")).exists():
                problems.append(f"**Control:** names `{path}`, which does not exist in the repository")

    tests = hazard.get("Tests")
    if tests is not None:
        node_ids = test_names(tests)
        if not node_ids:
            problems.append("**Tests:** names no test (pytest node ids in backticks)")
        for node_id in node_ids:
            problem = node_id_problem(node_id, root)
            if problem:
                problems.append(f"**Tests:** {problem}")
        if "TODO" in tests:
            todo = tests[tests.index("TODO"):]
            problems.append(f"**Tests:** still TODO: {todo[:300]}")
    if "TODO" in hazard.text and (tests is None or "TODO" not in tests):
        problems.append("says TODO outside **Tests:**")
    if not hazard.title.strip():
        problems.append("has no title")
    return problems


# -------------------------------------------------------------------- the log


def _log_text() -> str:
    assert LOG.is_file(), f"{LOG.relative_to(ROOT)} is missing"
    return LOG.read_text(encoding="utf-8")


def _hazards_for_params() -> list:
    try:
        hazards = parse_hazards(LOG.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [pytest.param(None, id="no-log")]
    if not hazards:
        return [pytest.param(None, id="no-hazards")]
    return [pytest.param(h, id=h.id) for h in hazards]


@pytest.mark.parametrize("hazard", _hazards_for_params())
def test_hazard_is_complete_with_existing_controls_and_tests(hazard):
    assert hazard is not None, f"{LOG.relative_to(ROOT)} is missing or lists no '### H-NN Title' hazard"
    problems = hazard_problems(hazard)
    assert not problems, (
        f"{hazard.id} ({hazard.title}, line {hazard.line} of docs/safety/hazard-log.md):\n  - "
        + "\n  - ".join(problems)
    )


def test_hazard_ids_are_unique_and_sequential():
    hazards = parse_hazards(_log_text())
    assert hazards, "the hazard log lists no '### H-NN Title' hazard"
    ids = [h.id for h in hazards]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"hazard ids used more than once: {', '.join(duplicates)}"
    numbers = [h.number for h in hazards]
    assert numbers[0] == 1, f"the first hazard is {hazards[0].id}; the log starts at H-01"
    for before, after in zip(hazards, hazards[1:], strict=False):
        assert after.number == before.number + 1, (
            f"{after.id} follows {before.id}: ids run H-01, H-02, … in order without gaps "
            "(a hazard that no longer applies keeps its section)"
        )
    for h in hazards:
        assert re.fullmatch(r"H-\d{2,}", h.id), f"{h.id}: ids are H- and at least two digits (H-01)"


def test_the_review_hazards_are_logged():
    """The hazards of the design and of the safety review keep their ids: code cites them."""
    titles = {h.id: h.title for h in parse_hazards(_log_text())}
    for number in range(1, 18):
        assert f"H-{number:02d}" in titles, f"H-{number:02d} is missing from the hazard log"


def test_introduction_defines_scope_severity_scale_and_how_to_change_the_log():
    text = _log_text()
    intro = text.split("\n### H-", 1)[0]
    for heading in ("## Scope", "## Severity", "## How to add or change a hazard"):
        assert heading in intro, f"the hazard log's introduction lacks the section {heading!r}"
    for severity in SEVERITIES:
        assert re.search(rf"^\| {severity} \| \S", intro, re.M), (
            f"the severity scale does not define {severity!r} (a table row '| {severity} | meaning |')"
        )
    assert "a change that touches a control updates its row" in intro.lower(), (
        "the introduction must say that a change that touches a control updates its row"
    )
    assert "ISO 14971" in intro and "DCB0129" in intro, "the introduction names ISO 14971 and DCB0129"


def test_readme_links_the_hazard_log():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"\]\((?:\./)?docs/safety/hazard-log\.md(?:#[^)]*)?\)", readme), (
        "README.md does not link docs/safety/hazard-log.md (a Markdown link '[…](docs/safety/hazard-log.md)')"
    )


def test_the_log_does_not_cite_the_product_brief():
    assert not re.search(r"\bSPEC\b", _log_text()), "the hazard log must state its rules itself, not cite SPEC"


# ------------------------------------------------- the checker checks (self-test)


GOOD = """\
### H-01 Something late
- **What goes wrong:** a thing
  continues here.
- **Causes:** causes
- **Effect on the patient:** harm
- **Severity:** major
- **Control:** `pumps/mod.py` (what it does), `/health/` is a URL
- **Tests:** `tests/test_mod.py::test_one`, `tests/test_mod.py::TestGroup::test_two`,
  `tests/test_mod.py::test_param[case-1]`
- **Residual risk:** some
"""

MODULE = """\
import pytest

def test_one():
    pass

@pytest.mark.parametrize("x", [1])
def test_param(x):
    pass

class TestGroup:
    def test_two(self):
        pass

def helper():
    pass
"""


@pytest.fixture
def fake_repo(tmp_path):
    (tmp_path / "pumps").mkdir()
    (tmp_path / "pumps" / "mod.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mod.py").write_text(MODULE)
    return tmp_path


def _problems(text: str, root: Path) -> list[str]:
    (hazard,) = parse_hazards(text)
    return hazard_problems(hazard, root)


def test_checker_accepts_a_complete_hazard(fake_repo):
    assert _problems(GOOD, fake_repo) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("- **Causes:** causes\n", ""), "missing field **Causes:**"),
        (("- **Severity:** major", "- **Severity:** bad"), "severity 'bad' is not one of"),
        (("`pumps/mod.py` (what it does), ", ""), "names no repository path"),
        (("`pumps/mod.py`", "`pumps/gone.py`"), "`pumps/gone.py`, which does not exist"),
        (("`tests/test_mod.py::test_one`", "`tests/test_mod.py::test_three`"), "no test function test_three"),
        (("`tests/test_mod.py::test_one`", "`tests/test_gone.py::test_one`"), "no file tests/test_gone.py"),
        (("`tests/test_mod.py::test_one`", "`tests/test_mod.py::helper`"), "helper is not a test function"),
        (("TestGroup::test_two", "TestGroup::test_nine"), "no test method test_nine in class TestGroup"),
        (("TestGroup::test_two", "TestOther::test_two"), "no class TestOther"),
        (("`tests/test_mod.py::test_one`,", "TODO (needed: a test of x),"), "still TODO: TODO (needed: a test of x)"),
        (("- **Residual risk:** some", "- **Residual risk:** TODO"), "says TODO outside **Tests:**"),
        (("- **Residual risk:** some\n", ""), "missing field **Residual risk:**"),
        (("- **Residual risk:** some", "- **Residual risk:** some\n- **Causes:** again"), "given 2 times"),
        (("- **What goes wrong:** a thing", "Some stray words.\n- **What goes wrong:** a thing"),
         "text outside any field"),
    ],
)
def test_checker_reports_each_problem(fake_repo, change, expected):
    old, new = change
    assert old in GOOD
    problems = _problems(GOOD.replace(old, new, 1), fake_repo)
    assert any(expected in p for p in problems), problems


def test_checker_reports_a_hazard_without_tests(fake_repo):
    text = re.sub(r"- \*\*Tests:\*\*.*?(?=- \*\*Residual)", "- **Tests:** none yet\n", GOOD, flags=re.S)
    assert any("names no test" in p for p in _problems(text, fake_repo))


def test_checker_reports_fields_out_of_order(fake_repo):
    lines = GOOD.splitlines(keepends=True)
    causes = lines.pop(3)
    lines.insert(5, causes)
    assert any("out of order" in p for p in _problems("".join(lines), fake_repo))


def test_parser_ends_a_hazard_at_the_next_heading():
    text = GOOD + "\n## Appendix\n\n- **Control:** `nowhere/at_all.py`\n\n" + GOOD.replace("H-01", "H-02")
    hazards = parse_hazards(text)
    assert [h.id for h in hazards] == ["H-01", "H-02"]
    assert "nowhere" not in hazards[0].text
