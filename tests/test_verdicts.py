"""diagnose's comparisons and verdict, with near-miss evidence from an independent model.

The evidence here is what SPEC.md says the example image measures (tests/spec_model.py),
changed by one bit in the LAST byte where a mismatch is wanted: a comparison that looks at
fewer bytes, a register read from the wrong option, or a verdict that counts the wrong checks
turns one of these tests red. Only public behaviour is asserted: ``diagnose()``'s statuses
and verdict, the CLI's exit code, its JSON comparison and its text lines.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from spec_model import sha384, spec_events, spec_registers
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, OvmfVariant, VmConfig
from dstack_mr.diagnose import diagnose
from dstack_mr.event_identity import simulated_event
from dstack_mr.eventlog import DSTACK_RUNTIME_EVENT_TYPE, Event, parse_json_event_log
from dstack_mr.events import layouts
from dstack_mr.evidence import Evidence
from dstack_mr.example import write_example_image
from dstack_mr.image import Image, ImageFiles
from dstack_mr_cli.main import app

GIB = 1 << 30
VM = VmConfig(cpu_count=2, memory_size=2 * GIB)
REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")


def near_miss(value: bytes) -> bytes:
    """``value`` with the lowest bit of its last byte flipped."""
    return value[:-1] + bytes([value[-1] ^ 0x01])


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_example_image(tmp_path_factory.mktemp("verdicts") / "img").parent


@pytest.fixture(scope="module")
def image(image_dir: Path) -> Image:
    return Image(
        ImageFiles.from_metadata(image_dir / "metadata.json"),
        AcpiTablesFile(image_dir / "acpi-tables.bin"),
    )


@pytest.fixture(scope="module")
def want() -> dict[str, bytes]:
    return spec_registers()


# The pre202505 layout's labels, so each event carries the type (and naming payload) real
# firmware logs for it: diagnose pairs events by what they are, not only by position.
_LABELS = [[s.label for s in layout] for layout in layouts(OvmfVariant.PRE202505)]


def vm_event(rtmr: int, i: int, digest: bytes) -> Event:
    labels = _LABELS[rtmr]
    return simulated_event(rtmr, labels[min(i, len(labels) - 1)], digest)


def boot_events(logs: list[list[bytes]] | None = None) -> list[Event]:
    logs = spec_events() if logs is None else logs
    return [vm_event(rtmr, i, d) for rtmr, log in enumerate(logs) for i, d in enumerate(log)]


def statuses(report: Any) -> dict[str, str]:
    return {r.name.lower(): r.status for r in report.registers}


# --- registers --------------------------------------------------------------------------------


def test_exact_registers_match(image: Image, want: dict[str, bytes]) -> None:
    report = diagnose(VM, image, Evidence(registers=dict(want)), explain=False)
    assert statuses(report) == dict.fromkeys(REGISTERS, "match")
    assert report.ok and report.exit_code == 0


@pytest.mark.parametrize("register", REGISTERS)
@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_register_off_by_one_bit_in_last_byte(
    image: Image, want: dict[str, bytes], register: str, bit: int
) -> None:
    actual = dict(want)
    actual[register] = want[register][:-1] + bytes([want[register][-1] ^ bit])
    report = diagnose(VM, image, Evidence(registers=actual), explain=False)
    assert statuses(report) == {r: "mismatch" if r == register else "match" for r in REGISTERS}
    assert not report.ok and report.exit_code == 1


@pytest.mark.parametrize("register", REGISTERS)
def test_register_off_in_first_byte(image: Image, want: dict[str, bytes], register: str) -> None:
    actual = {register: bytes([want[register][0] ^ 0x01]) + want[register][1:]}
    report = diagnose(VM, image, Evidence(registers=actual), explain=False)
    assert statuses(report)[register] == "mismatch" and report.exit_code == 1


def test_uncompared_registers_do_not_fail(image: Image, want: dict[str, bytes]) -> None:
    report = diagnose(VM, image, Evidence(registers={"rtmr1": want["rtmr1"]}), explain=False)
    assert statuses(report) == {"mrtd": "not-compared", "rtmr0": "not-compared",
                                "rtmr1": "match", "rtmr2": "not-compared"}  # fmt: skip
    assert report.ok and report.exit_code == 0


# --- events -----------------------------------------------------------------------------------


def test_exact_events_match(image: Image) -> None:
    report = diagnose(VM, image, Evidence(events=tuple(boot_events())), explain=False)
    assert [e.status for e in report.events] == ["match"] * (13 + 5 + 2)
    assert statuses(report) == {"mrtd": "not-compared", "rtmr0": "match", "rtmr1": "match",
                                "rtmr2": "match"}  # fmt: skip
    assert report.ok and report.exit_code == 0


def test_each_event_off_by_one_bit_in_last_byte(image: Image) -> None:
    logs = spec_events()
    for rtmr, log in enumerate(logs):
        for i in range(len(log)):
            changed = [list(x) for x in logs]
            changed[rtmr][i] = near_miss(log[i])
            report = diagnose(VM, image, Evidence(events=tuple(boot_events(changed))),
                              explain=False)  # fmt: skip
            bad = [(e.rtmr, e.index, e.status) for e in report.events if e.status != "match"]
            assert bad == [(rtmr, i, "mismatch")], (rtmr, i)
            assert statuses(report)[f"rtmr{rtmr}"] == "mismatch"
            assert not report.ok and report.exit_code == 1


def test_missing_and_extra_events_fail(image: Image) -> None:
    logs = spec_events()
    short = [logs[0], logs[1][:-1], logs[2]]
    report = diagnose(VM, image, Evidence(events=tuple(boot_events(short))), explain=False)
    assert [(e.rtmr, e.status) for e in report.events if e.status != "match"] == [(1, "missing")]
    assert report.exit_code == 1
    extra = [logs[0], logs[1], [*logs[2], sha384(b"extra")]]
    report = diagnose(VM, image, Evidence(events=tuple(boot_events(extra))), explain=False)
    assert [(e.rtmr, e.status) for e in report.events if e.status != "match"] == [(2, "extra")]
    assert report.exit_code == 1


def test_event_checks_say_what_each_event_varies_with(image: Image) -> None:
    logs = spec_events()
    extra = [logs[0], logs[1], [*logs[2], sha384(b"extra")]]
    report = diagnose(VM, image, Evidence(events=tuple(boot_events(extra))), explain=False)
    # The separator is EV_SEPARATOR over a 4-byte zero (TCG PC Client spec): its expected
    # digest is SHA-384 of four zero bytes, and its note says exactly that.
    separators = [(e.rtmr, e.varies_with, e.expected) for e in report.events
                  if e.label == "separator"]  # fmt: skip
    assert separators == [(r, "fixed: sha384(00000000)", sha384(bytes(4))) for r in (0, 1)]
    # The TD HOB (RTMR0's first event) is built from the memory size (SPEC.md).
    assert report.events[0].label == "td_hob"
    assert report.events[0].varies_with.startswith("varies-with: memory_size")
    # An event nothing expected has no note; it is the log's third RTMR2 entry, logged (by
    # boot_events) as another initrd event: EV_EVENT_TAG, 6 in the TCG PC Client spec.
    assert [
        (e.label, e.varies_with, e.index, e.actual_index, e.actual_type, e.actual_identity)
        for e in report.events
        if e.status == "extra"
    ] == [("(unexpected event)", "", None, 2, 6, "initrd")]


def test_log_without_one_register_fails(image: Image) -> None:
    """No RTMR1 event at all: RTMR1 cannot be replayed (so no register mismatch), but its five
    expected events are missing and the verdict must fail on them alone."""
    logs = spec_events()
    report = diagnose(VM, image, Evidence(events=tuple(boot_events([logs[0], [], logs[2]]))),
                      explain=False)  # fmt: skip
    assert statuses(report) == {"mrtd": "not-compared", "rtmr0": "match",
                                "rtmr1": "not-compared", "rtmr2": "match"}  # fmt: skip
    assert [(e.rtmr, e.status) for e in report.events if e.status != "match"] == [
        (1, "missing")
    ] * 5
    assert not report.ok and report.exit_code == 1


# --- the verdict: boot-time registers only; RTMR3 is reported, not judged ---------------------


def runtime_events(count: int = 2) -> list[Event]:
    return [
        Event(3, DSTACK_RUNTIME_EVENT_TYPE, sha384(f"app event {i}".encode()), f"e{i}", b"")
        for i in range(count)
    ]


def stated(want: dict[str, bytes], rtmr3: bytes) -> dict[str, bytes]:
    return {**{k: want[k] for k in ("rtmr0", "rtmr1", "rtmr2")}, "rtmr3": rtmr3}


def test_rtmr3_replay_mismatch_does_not_fail_the_boot_verdict(
    image: Image, want: dict[str, bytes]
) -> None:
    events = (*boot_events(), *runtime_events())
    rtmr3 = sha384(sha384(bytes(48) + events[-2].digest) + events[-1].digest)
    ok = diagnose(VM, image, Evidence(events=events, stated_registers=stated(want, rtmr3)),
                  explain=False)  # fmt: skip
    assert [(r.imr, r.matches) for r in ok.replay] == [(0, True), (1, True), (2, True), (3, True)]
    assert ok.ok and ok.exit_code == 0

    bad3 = stated(want, near_miss(rtmr3))
    report = diagnose(VM, image, Evidence(events=events, stated_registers=bad3), explain=False)
    assert [(r.imr, r.matches) for r in report.replay] == [(0, True), (1, True), (2, True),
                                                           (3, False)]  # fmt: skip
    assert report.ok and report.exit_code == 0


@pytest.mark.parametrize("register", ["rtmr0", "rtmr1", "rtmr2"])
def test_boot_replay_mismatch_fails_the_verdict(
    image: Image, want: dict[str, bytes], register: str
) -> None:
    """The log matches the expected events, but does not replay to the stated register: the
    evidence is inconsistent, and the verdict must say so."""
    events = (*boot_events(), *runtime_events())
    rtmr3 = sha384(sha384(bytes(48) + events[-2].digest) + events[-1].digest)
    regs = stated(want, rtmr3)
    regs[register] = near_miss(regs[register])
    report = diagnose(VM, image, Evidence(events=events, stated_registers=regs), explain=False)
    imr = int(register[-1])
    assert [r.imr for r in report.replay if not r.matches] == [imr]
    assert not report.ok and report.exit_code == 1


# --- runtime events: stated digests checked against their payloads ----------------------------


def v1_digest(name: str, payload: bytes) -> bytes:
    return sha384(DSTACK_RUNTIME_EVENT_TYPE.to_bytes(4, "little") + b":" + name.encode() + b":"
                  + payload)  # fmt: skip


def v2_digest(name: str, payload: bytes) -> bytes:
    # RFC 8785 (JCS) by hand: keys sorted, no whitespace.
    text = (f'{{"event":"{name}","event_type":{DSTACK_RUNTIME_EVENT_TYPE},'
            f'"payload":"{payload.hex()}","version":2}}')  # fmt: skip
    return sha384(text.encode())


def runtime_entry(digest: bytes, version: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"imr": 3, "event_type": DSTACK_RUNTIME_EVENT_TYPE,
                             "digest": digest.hex(), "event": "app-id",
                             "event_payload": "c0ffee"}  # fmt: skip
    if version is not None:
        entry["version"] = version
    return entry


PAYLOAD = bytes.fromhex("c0ffee")


@pytest.mark.parametrize(
    ("version", "digest", "consistent"),
    [
        (2, v2_digest("app-id", PAYLOAD), True),
        (None, v2_digest("app-id", PAYLOAD), True),
        (1, v1_digest("app-id", PAYLOAD), True),
        (None, v1_digest("app-id", PAYLOAD), True),
        (2, v1_digest("app-id", PAYLOAD), False),
        (1, v2_digest("app-id", PAYLOAD), False),
        (2, near_miss(v2_digest("app-id", PAYLOAD)), False),
        (None, near_miss(v1_digest("app-id", PAYLOAD)), False),
    ],
)
def test_runtime_digest_consistency(version: int | None, digest: bytes, consistent: bool) -> None:
    (event,) = parse_json_event_log([runtime_entry(digest, version)])
    assert event.digest == digest and not event.digest_derived
    assert event.payload_consistent is consistent


def test_stated_v2_digest_not_flagged_by_diagnose(image: Image, want: dict[str, bytes]) -> None:
    good = v2_digest("app-id", PAYLOAD)
    for digest, flagged in ((good, 0), (near_miss(good), 1)):
        events = (*boot_events(), *parse_json_event_log([runtime_entry(digest, 2)]))
        regs = stated(want, sha384(bytes(48) + digest))
        report = diagnose(VM, image, Evidence(events=events, stated_registers=regs),
                          explain=False)  # fmt: skip
        (check3,) = [r for r in report.replay if r.imr == 3]
        assert check3.matches and check3.inconsistent_payloads == flagged
        assert ("not that of their payload" in check3.message) is bool(flagged)


# --- the memory-size search reaches 2 TiB ------------------------------------------------------


@pytest.mark.parametrize("with_log", [True, False])
def test_memory_search_reaches_2_tib(image: Image, with_log: bool) -> None:
    logs = spec_events(2 << 40)
    assert logs[1:] == spec_events()[1:]  # at and above 2.75 GiB only the TD HOB moves
    evidence = (
        Evidence(events=tuple(boot_events(logs)))
        if with_log
        else Evidence(registers={"rtmr0": spec_registers(2 << 40)["rtmr0"]})
    )
    report = diagnose(VM, image, evidence)
    (hob,) = [f for f in report.findings if f.subject == "td_hob"]
    assert hob.reproduced and hob.parameter == "memory_size" and hob.value == "2T"
    assert report.exit_code == 1


def test_memory_search_stops_at_2_tib(image: Image) -> None:
    logs = spec_events((2 << 40) + (256 << 20))
    report = diagnose(VM, image, Evidence(events=tuple(boot_events(logs))))
    (hob,) = [f for f in report.findings if f.subject == "td_hob"]
    assert not hob.reproduced and hob.value is None


# --- the CLI: each --actual-* option reaches its own register ---------------------------------


def cli(image_dir: Path, tmp_path: Path, *args: str) -> Any:
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 * GIB}))
    base = ["diagnose", "--vm-config", str(vm), "--image-dir", str(image_dir),
            "--acpi-tables", str(image_dir / "acpi-tables.bin"), "--no-explain"]  # fmt: skip
    return CliRunner().invoke(app, [*base, *args])


def actual_args(values: dict[str, bytes]) -> list[str]:
    return [a for name, v in values.items() for a in (f"--actual-{name}", v.hex())]


def test_cli_each_actual_option_is_its_own_register(
    image_dir: Path, tmp_path: Path, want: dict[str, bytes]
) -> None:
    result = cli(image_dir, tmp_path, "--json", *actual_args(want))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [(c["register"], c["status"], c["actual"]) for c in doc["comparison"]] == [
        (r.upper(), "match", want[r].hex()) for r in REGISTERS
    ]
    assert doc["ok"] is True
    for register in REGISTERS:
        actual = {**want, register: near_miss(want[register])}
        result = cli(image_dir, tmp_path, "--json", *actual_args(actual))
        assert result.exit_code == 1, (register, result.output)
        doc = json.loads(result.output)
        assert {c["register"].lower(): c["status"] for c in doc["comparison"]} == {
            r: "mismatch" if r == register else "match" for r in REGISTERS
        }
        assert {c["register"].lower(): c["actual"] for c in doc["comparison"]} == {
            r: v.hex() for r, v in actual.items()
        }


@pytest.mark.parametrize("register", REGISTERS)
def test_cli_text_lines_for_one_register(
    image_dir: Path, tmp_path: Path, want: dict[str, bytes], register: str
) -> None:
    ok = cli(image_dir, tmp_path, f"--actual-{register}", "0x" + want[register].hex())
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[0] == (
        f"MATCH: {register.upper()} equal the expected values (--actual-{register})"
    )

    bad = cli(image_dir, tmp_path, f"--actual-{register}", near_miss(want[register]).hex())
    assert bad.exit_code == 1, bad.output
    assert re.search(rf"^\s*{register.upper()}\s*: MISMATCH\b", bad.output, re.M), bad.output
    assert f"expected: {want[register].hex()}" in bad.output
    assert f"actual:   {near_miss(want[register]).hex()}" in bad.output
    assert bad.output.startswith(f"MISMATCH: {register.upper()} (unsigned: --actual-{register})")
    for other in REGISTERS:
        if other != register:
            assert not re.search(rf"^\s*{other.upper()}\s*: (MATCH|MISMATCH)", bad.output, re.M)


def test_cli_event_log_near_miss(image_dir: Path, tmp_path: Path) -> None:
    logs = spec_events()
    log = tmp_path / "events.json"
    for change, code in ((None, 0), ((2, 1), 1), ((0, 0), 1)):
        events = [list(x) for x in logs]
        if change is not None:
            events[change[0]][change[1]] = near_miss(events[change[0]][change[1]])
        log.write_text(json.dumps([
            {"imr": r, "event_type": e.event_type, "digest": d.hex(),
             "event_payload": e.event_payload.hex()}
            for r, ev in enumerate(events) for i, d in enumerate(ev) for e in [vm_event(r, i, d)]
        ]))  # fmt: skip
        result = cli(image_dir, tmp_path, "--json", "--event-log", str(log))
        assert result.exit_code == code, result.output
        doc = json.loads(result.output)
        bad = [(e["rtmr"], e["index"]) for e in doc["events"] if e["status"] != "match"]
        assert bad == ([] if change is None else [change])


# --- which evidence a register is compared with ------------------------------------------------


def quote_with(registers: dict[str, bytes]) -> bytes:
    body = bytearray(584)
    body[136:184] = registers["mrtd"]
    for i in range(4):
        body[328 + 48 * i : 376 + 48 * i] = registers[f"rtmr{i}"]
    head = struct.pack("<HHI", 4, 2, 0x81) + bytes(40)
    return head + bytes(body) + struct.pack("<I", 0)


def test_actual_value_precedence(image: Image, want: dict[str, bytes]) -> None:
    """--actual-* beats the quote, the quote beats tcb_info, tcb_info beats a log replay."""
    from dstack_mr.quote import parse_quote

    boot = (*boot_events(), *runtime_events())
    rtmr3 = sha384(sha384(bytes(48) + boot[-2].digest) + boot[-1].digest)
    full = {**want, "rtmr3": rtmr3}
    q = parse_quote(quote_with(full))
    wrong = {k: near_miss(v) for k, v in full.items()}
    cases = [
        (Evidence(registers={"rtmr1": want["rtmr1"]}, quote=parse_quote(quote_with(wrong))),
         "rtmr1", "--actual-rtmr1", "match"),
        (Evidence(quote=q, stated_registers=wrong), "rtmr2", "quote", "match"),
        (Evidence(stated_registers=wrong, events=boot), "rtmr0", "tcb_info", "mismatch"),
        (Evidence(events=boot), "rtmr2", "event log replay", "match"),
        (Evidence(events=tuple(e for e in boot if e.imr != 1)), "rtmr1", None, "not-compared"),
        (Evidence(quote=q), "mrtd", "quote", "match"),
        (Evidence(events=boot), "mrtd", None, "not-compared"),
    ]  # fmt: skip
    for evidence, register, source, status in cases:
        report = diagnose(VM, image, evidence, explain=False)
        (check,) = [r for r in report.registers if r.name.lower() == register]
        assert (check.source, check.status) == (source, status), (register, source)


def test_quote_and_log_replay_checked(image: Image, want: dict[str, bytes]) -> None:
    from dstack_mr.quote import parse_quote

    boot = (*boot_events(), *runtime_events())
    rtmr3 = sha384(sha384(bytes(48) + boot[-2].digest) + boot[-1].digest)
    q = parse_quote(quote_with({**want, "rtmr3": rtmr3}))
    report = diagnose(VM, image, Evidence(quote=q, events=boot), explain=False)
    assert [(r.imr, r.events, r.reference_source, r.matches) for r in report.replay] == [
        (0, 13, "quote", True), (1, 5, "quote", True), (2, 2, "quote", True),
        (3, 2, "quote", True),
    ]  # fmt: skip
    assert report.ok
    # A log with RTMR1 cut short no longer replays to the quote's RTMR1.
    cut = tuple(e for e in boot if not (e.imr == 1 and e.digest == boot[13 + 4].digest))
    report = diagnose(VM, image, Evidence(quote=q, events=cut), explain=False)
    assert [(r.imr, r.events, r.matches) for r in report.replay][1] == (1, 4, False)
    assert not report.ok


def test_evidence_merge() -> None:
    from dstack_mr.errors import EvidenceError

    a = Evidence(registers={"rtmr0": b"\x01" * 48}, sources=("a",))
    b = Evidence(registers={"rtmr0": b"\x02" * 48, "rtmr1": b"\x03" * 48}, sources=("b",))
    merged = a.merge(b)
    assert merged.registers == {"rtmr0": b"\x01" * 48, "rtmr1": b"\x03" * 48}
    assert merged.sources == ("a", "b")
    ev1, ev2 = (Event(0, 1, b"\x04" * 48),), (Event(0, 1, b"\x05" * 48),)
    assert Evidence(events=ev1).merge(Evidence()).events == ev1
    assert Evidence().merge(Evidence(events=ev1)).events == ev1
    with pytest.raises(EvidenceError, match="two different event logs were given"):
        Evidence(events=ev1).merge(Evidence(events=ev2))
    assert Evidence(events=ev1).merge(Evidence(events=ev1)).events == ev1
    vm = VmConfig(cpu_count=3)
    assert Evidence().merge(Evidence(vm_config=vm)).vm_config == vm
    assert Evidence(stated_registers={"rtmr3": b"x"}).merge(Evidence()).stated_registers == {
        "rtmr3": b"x"
    }


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("ab" * 48, True),
        ("0x" + "ab" * 48, True),
        ("  0x" + "AB" * 48 + "\n", True),
        ("0x0x" + "ab" * 48, True),
        ("ab" * 47, False),
        ("ab" * 49, False),
        ("ab" * 47 + "a", False),
        ("0X" + "ab" * 48, False),
        ("ab" * 47 + "zz", False),
        ("", False),
    ],
)
def test_register_hex(text: str, ok: bool) -> None:
    from dstack_mr.errors import EvidenceError
    from dstack_mr.evidence import parse_register_hex

    if ok:
        assert parse_register_hex(text, "--actual-rtmr0") == b"\xab" * 48
    else:
        with pytest.raises(EvidenceError, match="--actual-rtmr0: expected 48 bytes as 96 hex"):
            parse_register_hex(text, "--actual-rtmr0")
