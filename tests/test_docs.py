"""The documentation cannot rot: the notebook runs, the site builds strictly, and the pages'
captured outputs, event tables and CLI examples still match the code.

The notebook needs nbclient/nbformat/ipykernel and the site build needs mkdocs (the ``docs``
extra). Without them those tests skip — unless ``DSTACK_MR_DOCS_REQUIRED=1`` (set it in CI),
which turns a missing tool into a failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, SHARED, shared_path
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, OvmfVariant, VmConfig
from dstack_mr.events import RTMR0_LAYOUTS, RTMR1_LAYOUT, RTMR2_LAYOUT
from dstack_mr.example import write_example_image
from dstack_mr.image import Image
from dstack_mr_cli.main import app

DOCS = ROOT / "docs"
NOTEBOOK = DOCS / "example.ipynb"
REQUIRED = os.environ.get("DSTACK_MR_DOCS_REQUIRED", "") not in ("", "0")


def need(module: str) -> ModuleType:
    """Import a docs tool, or skip (fail when DSTACK_MR_DOCS_REQUIRED is set)."""
    if importlib.util.find_spec(module) is None:
        if REQUIRED:
            pytest.fail(f"{module} is not installed but DSTACK_MR_DOCS_REQUIRED is set")
        pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    return importlib.import_module(module)


def shared_present() -> bool:
    return (SHARED / "real" / "dstack-0.6.0-getquote.json").is_file()


# --- the example notebook ---------------------------------------------------------------------


def outputs_of(nb: Any) -> tuple[list[str], list[str]]:
    """(text/html outputs, text of stream and plain outputs) of all code cells."""
    htmls, texts = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            assert out.output_type != "error", "".join(out.get("traceback", []))
            if out.output_type == "stream":
                texts.append(out.text)
            data = out.get("data", {})
            if "text/html" in data:
                htmls.append(data["text/html"])
            elif "text/plain" in data:
                texts.append(data["text/plain"])
    return htmls, texts


def test_notebook_is_stored_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_executes(tmp_path: Path) -> None:
    nbformat = need("nbformat")
    nbclient = need("nbclient")
    need("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(DOCS)}},
    )
    client.execute()
    htmls, texts = outputs_of(nb)

    # Measurements, the RTMR0 log and the details: HTML tables with labels and short digests.
    assert any('<table class="dstack-mr dstack-mr-registers">' in h for h in htmls)
    log = next(h for h in htmls if "RTMR0 = " in h and "dstack-mr-log" in h)
    assert "td_hob" in log and "acpi_tables" in log and "Boot0000" in log and "…" in log
    # The simulated 4 GiB VM: exactly one mismatching event row, the TD HOB, explained.
    report = next(h for h in htmls if "simulated 4 GiB VM" in h)
    events = report[report.index("dstack-mr-events") :]
    assert events.count('<tr class="mismatch"') == 1
    row = events[events.index('<tr class="mismatch"') :]
    assert row[: row.index("</tr>")].count("td_hob") == 1
    assert "td_hob: the VM ran with memory_size=4G (config says 2G) <b>[proven]</b>" in report
    assert any("td_hob: the VM ran with memory_size=4G" in t and "proven" in t for t in texts)

    if shared_present():
        real = next(h for h in htmls if "guest-agent GetQuote response" in h)
        assert "carries no digest for 9 of its 9 events" in real
        assert "acpi_tables" in real and '<tr class="mismatch"' in real
    else:
        assert any("Shared test data not found" in t for t in texts)


def test_notebook_says_so_without_shared_data(tmp_path: Path) -> None:
    """The real-capture cell degrades gracefully when the shared data is absent."""
    nbformat = need("nbformat")
    nbclient = need("nbclient")
    need("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(
        1,
        nbformat.v4.new_code_cell(
            f"import os; os.environ['DSTACK_MR_SHARED'] = {str(tmp_path / 'absent')!r}"
        ),
    )
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(DOCS)}}
    ).execute()
    htmls, texts = outputs_of(nb)
    assert any("Shared test data not found" in t and "absent" in t for t in texts)
    assert not any("guest-agent GetQuote response" in h for h in htmls)


# --- the site ---------------------------------------------------------------------------------


def test_site_builds_strictly(tmp_path: Path) -> None:
    need("mkdocs")
    need("mkdocstrings")
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]

    cli = (site / "cli" / "index.html").read_text()
    for command in ("measure", "diagnose", "example", "verify"):
        assert f"Usage: dstack-mr {command} [OPTIONS]" in cli
    assert "--install-completion" in cli and "<!-- cli-reference -->" not in cli
    api = (site / "api" / "index.html").read_text()
    for name in ("dstack_mr.machine.Machine", "dstack_mr.diagnose.diagnose", "RTMR0_LAYOUTS"):
        assert name in api, name
    assert ":class:" not in api and ":func:" not in api  # Sphinx roles shown as plain code
    assert not (site / "hooks").exists()
    assert (site / "example.ipynb").is_file() and (site / "diagnose.schema.json").is_file()


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", DOCS / "hooks" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_hook() -> None:
    text = load_hook().cli_reference()
    assert [h for h in text.splitlines() if h.startswith("## ")] == [
        "## dstack-mr",
        "## dstack-mr measure",
        "## dstack-mr diagnose",
        "## dstack-mr example",
        "## dstack-mr measurement-doc",
        "## dstack-mr inspect-measurement",
        "## dstack-mr verify",
    ]
    assert "```text\nUsage: dstack-mr measure [OPTIONS] " in text


# --- --help texts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    ["measure", "diagnose", "example", "measurement-doc", "inspect-measurement", "verify"],
)
def test_help_has_a_readable_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=80)
    assert result.exit_code == 0
    out = result.output
    assert re.search(r"^  Examples?:$", out, re.M), out
    examples = [line for line in out.splitlines() if line.startswith(f"    dstack-mr {command}")]
    assert examples, out
    # Kept verbatim (not re-wrapped by click): each example line fits an 80-column terminal
    # and every continued command line ends in a backslash.
    block = out[out.index("Example") :].splitlines()
    assert all(len(line) <= 80 for line in block), block
    for line, nxt in itertools.pairwise(block):
        if nxt.startswith("        --"):
            assert line.endswith("\\"), (line, nxt)
    assert "\b" not in out


def test_group_help_mentions_completion() -> None:
    out = CliRunner().invoke(app, ["--help"], terminal_width=80).output
    assert "--install-completion" in out and "--show-completion" in out
    assert "    dstack-mr measure -c 2 -m 2G \\" in out


# --- pages that quote the code ----------------------------------------------------------------


def test_measurement_page_lists_every_event_in_order() -> None:
    page = (DOCS / "measurement.md").read_text()

    def labels(heading: str) -> list[str]:
        section = page[page.index(heading) :]
        section = section[: section.index("\n#", 1)]
        return re.findall(r"^\| (?:\d+) \| `([^`]+)` \|", section, re.M)

    layouts = {
        "### Pre-202505 layout (13 events)": RTMR0_LAYOUTS[OvmfVariant.PRE202505],
        "### edk2-stable202505 layout (17 events)": RTMR0_LAYOUTS[OvmfVariant.STABLE202505],
        "## RTMR1 — the kernel": RTMR1_LAYOUT,
        "## RTMR2 — command line and initrd": RTMR2_LAYOUT,
    }
    for heading, layout in layouts.items():
        assert labels(heading) == [s.label for s in layout], heading


def test_getting_started_shows_the_example_measurement(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "example-image")
    result = CliRunner().invoke(
        app,
        [
            "measure",
            "-c",
            "2",
            "-m",
            "2G",
            "--acpi-tables",
            str(meta.parent / "acpi-tables.bin"),
            str(meta),
        ],
    )
    assert result.exit_code == 0, result.output
    page = (DOCS / "getting-started.md").read_text()
    assert result.output.strip() in page


def diagnose_capture(tmp_path: Path, *extra: str, attestation: bool = True) -> str:
    """The CLI run the troubleshooting page shows, from a directory laid out like the page's:
    ``work/`` holding the image directory, ``../shared`` beside it."""
    inputs = shared_path("inputs")
    shared = tmp_path / "shared"
    (shared / "inputs").mkdir(parents=True, exist_ok=True)
    (shared / "real").mkdir(exist_ok=True)
    shutil.copy(inputs / "acpi-dstack-0.6.0-layout.bin", shared / "inputs")
    shutil.copy(shared_path("real", "dstack-0.6.0-getquote.json"), shared / "real")
    work = tmp_path / "work"
    image = work / "dstack-0.6.0"
    image.mkdir(parents=True, exist_ok=True)
    for name in ("ovmf-2022.11-deb12.fd", "vmlinuz-6.1.0-56-amd64", "initrd-small.img"):
        shutil.copy(inputs / name, image / name)
    (image / "metadata.json").write_text(
        json.dumps(
            {
                "bios": "ovmf-2022.11-deb12.fd",
                "kernel": "vmlinuz-6.1.0-56-amd64",
                "initrd": "initrd-small.img",
                "cmdline": "console=ttyS0 init=/init panic=1",
                "version": "0.6.0",
            }
        )
    )
    evidence = ["--attestation", "../shared/real/dstack-0.6.0-getquote.json"] if attestation else []
    cwd = Path.cwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(
            app,
            [
                "diagnose",
                *evidence,
                "--image-dir",
                "dstack-0.6.0",
                "--acpi-tables",
                "../shared/inputs/acpi-dstack-0.6.0-layout.bin",
                *extra,
            ],
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 1, result.output
    return result.output


def block(page: str, name: str) -> str:
    begin, end = f"<!-- {name}:begin -->\n```text\n", f"```\n<!-- {name}:end -->"
    return page[page.index(begin) + len(begin) : page.index(end)]


def test_troubleshooting_output_is_current(tmp_path: Path) -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    actual = diagnose_capture(tmp_path)
    assert block(page, "diagnose-output") == actual, (
        "docs/troubleshooting.md quotes an outdated diagnose report; replace the block between "
        "the diagnose-output markers with:\n" + actual
    )
    # Every part the page explains is in the output: verdict first, register blocks, the
    # first divergent event per RTMR, the evidence.
    lines = actual.splitlines()
    assert lines[0].startswith(
        "MISMATCH: MRTD, RTMR0, RTMR1, RTMR2 — image: your image directory is not the image "
        "this VM declares (os_image_hash e6f5cfec20c02e7b…)"
    )
    for part in ("\nimage:\n", "\nMRTD: MISMATCH", "\nRTMR0: MISMATCH", "\nevidence:\n",
                 "FIRST DIVERGENT RTMR0 EVENT: index=10 label=acpi_tables", "[proven]",
                 "[hypothesis]", "would settle it: ", "tried: "):  # fmt: skip
        assert part in actual, part


def excerpt_lines(page: str, name: str) -> list[str]:
    return [line for line in block(page, name).splitlines() if line != "  …"]


def test_troubleshooting_excerpt_is_current(tmp_path: Path) -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    vm = json.loads(
        json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())["vm_config"]
    )
    vm["memory_size"] = 4 << 30
    vm_json = tmp_path / "vm-4g.json"
    vm_json.write_text(json.dumps(vm))
    actual = diagnose_capture(tmp_path, "--vm-config", str(vm_json)).splitlines()
    excerpt = excerpt_lines(page, "diagnose-excerpt")
    assert all(line in actual for line in excerpt), [x for x in excerpt if x not in actual]
    assert excerpt[0] == actual[0]
    assert "  - td_hob: the VM ran with memory_size=2G (config says 4G) [proven]" in excerpt


def test_troubleshooting_quote_only_is_current(tmp_path: Path) -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    (tmp_path / "quote.hex").write_text(doc["quote"])
    (tmp_path / "vm.json").write_text(doc["vm_config"])
    actual = diagnose_capture(
        tmp_path,
        "--quote",
        str(tmp_path / "quote.hex"),
        "--vm-config",
        str(tmp_path / "vm.json"),
        attestation=False,
    ).splitlines()
    excerpt = excerpt_lines(page, "diagnose-quote-only")
    assert all(line in actual for line in excerpt), [x for x in excerpt if x not in actual]
    assert excerpt[0] == actual[0]
    assert not any("td_hob" in line for line in actual)


def test_real_capture_report_in_python_matches_page(tmp_path: Path) -> None:
    """The library and the page agree on the headline: which events differ."""
    from dstack_mr.attestation import parse_attestation
    from dstack_mr.diagnose import diagnose
    from dstack_mr.evidence import Evidence

    diagnose_capture(tmp_path)  # builds tmp_path/work/dstack-0.6.0
    image = Image.load(
        tmp_path / "work" / "dstack-0.6.0",
        AcpiTablesFile(shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")),
    )
    evidence = Evidence.from_attestation(
        parse_attestation(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    )
    assert isinstance(evidence.vm_config, VmConfig)
    report = diagnose(evidence.vm_config, image, evidence)
    page = (DOCS / "troubleshooting.md").read_text()
    assert (
        f"In this report {sum(e.status == 'match' for e in report.events)} of 20 events match"
        in page
    )


# --- names of code in the pages -----------------------------------------------------------------

#: A backquoted dotted name: ``module.function``, ``module.Class.method``, a package path.
_CODE_NAME = re.compile(r"`([a-z_][a-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)+)`")
#: What a page says after a name that no longer exists: ``(now `new.name`)``, possibly after
#: a first remark (``(`diagnose --collateral`; now the end of `new.name`)``).
_NOW = re.compile(r"\s*\((?:[^()]*?;\s*)?now\b[^`()]*`([^`]+)`")


def _resolves(name: str) -> bool:
    """``name`` is an attribute path into a module of dstack_mr or dstack_mr_cli."""
    parts = name.split(".")
    bases = [""] if parts[0] in ("dstack_mr", "dstack_mr_cli") else ["dstack_mr.", "dstack_mr_cli."]
    for base in bases:
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(base + ".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return True
    return False


def test_testing_page_names_code_that_exists() -> None:
    """docs/testing.md records past mutation runs by function name: a name that has since
    moved or gone says where it is now ("(now X)", X existing), or is marked as the old
    name ("(then X)"), so a reader can find the code."""
    text = (DOCS / "testing.md").read_text()
    stale = []
    for m in _CODE_NAME.finditer(text):
        name = m.group(1)
        if name.endswith(".py") or name.startswith("test_") or _resolves(name):
            continue
        if text[: m.start()].endswith("(then "):
            continue
        now = _NOW.match(text, m.end())
        if now is None or not _resolves(now.group(1)):
            stale.append(name)
    assert stale == []


# --- the docs extra ------------------------------------------------------------------------------


def _extras() -> dict[str, list[str]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: mypy (the test extra) brings tomli
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _distributions(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """The distributions extra ``extra`` installs, through ``dstack-mr[...]`` references
    (``dstack-mr`` itself stands for the package and its own dependencies)."""
    out = set()
    for requirement in extras[extra]:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", requirement)
        assert m is not None, requirement
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        out.add(name)
        if name == "dstack-mr":
            for inner in (m.group(2) or "").split(","):
                if inner.strip():
                    out |= _distributions(inner.strip(), extras) | {f"dstack-mr[{inner.strip()}]"}
    return out


def test_docs_extra_installs_what_the_site_build_imports() -> None:
    """``pip install -e '.[docs]'`` alone must build the site: its hooks import the CLI
    (dstack_mr_cli, hence the cli extra) and whatever else they name."""
    import ast

    extras = _extras()
    installed = _distributions("docs", extras)
    missing = []
    for hook in sorted((DOCS / "hooks").glob("*.py")):
        for node in ast.walk(ast.parse(hook.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top in ("__future__", "dstack_mr"):
                    continue
                needed = "dstack-mr[cli]" if top == "dstack_mr_cli" else top.replace("_", "-")
                if needed not in installed:
                    missing.append(f"{hook.name}: {top} needs {needed}")
    assert missing == []
