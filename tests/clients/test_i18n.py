"""The pages' string tables (clients/web/js/i18n.js): both languages complete, nothing untranslated.

Walks the tables as written in the source, the keys the pages use (parsed from the JS and HTML
files: `t("key")`, `setText(el, "key")`, `ref("key")`, `data-i18n="key"`, any string literal
that names a table key), and the values the server sends that the pages turn into words (error
reasons, roles, room kinds, alarm kinds, room-end and stream-end reasons, connection states).
"""

from __future__ import annotations

import html.parser
import re
import typing

import pytest

from dsp.alarms import AlarmKind
from protocol import signaling as wire
from protocol.signaling import ROOM_KINDS
from signaling import roles
from tests.conftest import REPO_ROOT

WEB = REPO_ROOT / "clients" / "web"
# Tools for an IT admin checking a node (whip.html: WHIP/WHEP by hand), not pages doctors use;
# they state in their own words what they are and are left out of the string-table checks.
DEV_PAGES = frozenset({"whip.html"})
I18N = WEB / "js" / "i18n.js"
ENTRY = re.compile(r'^\s*"([a-z0-9_.]+)":\s*"((?:[^"\\]|\\.)*)",?\s*$')
PLACEHOLDER = re.compile(r"\{(\w+)\}")
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
# keys whose text is the same in both languages on purpose
SAME_IN_BOTH = {"lang.zh", "lang.en", "lead.line"}
# alarm kinds the DSP is adding (ventricular fibrillation/flutter, ventricular tachycardia) and
# technical alarms: the wall must have words for them before the server sends them
EXPECTED_ALARM_KINDS = {"vf", "vt", "noise", "leads_off", "asystole"}
# end reasons sent by the server (docs/protocol.md): participant_left / bye
BYE_REASONS = {"left", "removed", "timeout", "room_ended"}


def tables() -> dict[str, dict[str, str]]:
    """{"zh": {key: text}, "en": {...}} parsed from i18n.js (one `"key": "text",` per line)."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in I18N.read_text().splitlines():
        if m := re.match(r"^  (zh|en): \{$", line):
            current = out.setdefault(m.group(1), {})
            continue
        if current is not None and line.startswith("  },"):
            current = None
            continue
        if current is not None and (m := ENTRY.match(line)):
            key, text = m.groups()
            assert key not in current, f"{key} twice in one table"
            current[key] = text.encode().decode("unicode_escape") if "\\u" in text else text
    return out


def js_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((WEB / "js").glob("*.js")) if p.name != "i18n.js"}


def html_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(WEB.glob("*.html")) if p.name not in DEV_PAGES}


def used_keys(prefixes: set[str]) -> dict[str, set[str]]:
    """Keys each source file uses: explicit calls and attributes, and every string literal that
    has the shape of a key under one of the tables' prefixes."""
    explicit = re.compile(r"""(?:\b(?:t|ref|has)\(|\bsetText\([^,]+,)\s*"([a-z][a-z0-9_]*\.[a-z0-9_.]+)\"""")
    attribute = re.compile(r'data-i18n(?:-title)?="([a-z][a-z0-9_]*\.[a-z0-9_.]+)"')
    literal = re.compile(r'"([a-z0-9_]+\.[a-z0-9_]+)"')
    out: dict[str, set[str]] = {}
    for name, text in {**js_sources(), **html_sources(), "i18n.js": I18N.read_text().split("export const STRINGS")[0]
                       + I18N.read_text().split("\n};\n", 1)[1]}.items():
        keys = set(explicit.findall(text)) | set(attribute.findall(text))
        keys |= {k for k in literal.findall(text) if k.split(".")[0] in prefixes}
        out[name] = keys
    return out


def test_both_languages_have_the_same_keys_and_no_empty_text() -> None:
    tabs = tables()
    assert set(tabs) == {"zh", "en"}
    zh, en = tabs["zh"], tabs["en"]
    assert len(zh) > 150, len(zh)  # the parser found the tables
    assert set(zh) - set(en) == set(), f"only in zh: {sorted(set(zh) - set(en))}"
    assert set(en) - set(zh) == set(), f"only in en: {sorted(set(en) - set(zh))}"
    for lang, table in tabs.items():
        empty = [k for k, v in table.items() if not v.strip()]
        assert not empty, f"{lang}: empty texts {empty}"
    for key in zh:
        assert set(PLACEHOLDER.findall(zh[key])) == set(PLACEHOLDER.findall(en[key])), \
            f"{key}: placeholders differ: zh {zh[key]!r}, en {en[key]!r}"


def test_the_chinese_table_is_chinese_and_the_english_one_english() -> None:
    tabs = tables()
    untranslated = [k for k, v in tabs["zh"].items()
                    if k not in SAME_IN_BOTH and (v == tabs["en"][k] or not CJK.search(v))]
    assert not untranslated, f"zh texts not in Chinese: {untranslated}"
    chinese_in_en = [k for k, v in tabs["en"].items() if k not in SAME_IN_BOTH and CJK.search(v)]
    assert not chinese_in_en, f"en texts with Chinese: {chinese_in_en}"


def test_every_key_the_pages_use_exists_in_both_tables() -> None:
    tabs = tables()
    prefixes = {k.split(".")[0] for k in tabs["en"]}
    used = used_keys(prefixes)
    assert sum(len(v) for v in used.values()) > 100, used  # the parser found the uses
    for name, keys in used.items():
        for lang in ("zh", "en"):
            missing = sorted(keys - set(tabs[lang]))
            assert not missing, f"{name} uses keys missing in {lang}: {missing}"


def test_every_value_the_server_sends_has_words_in_both_languages() -> None:
    tabs = tables()
    wanted = {f"reason.{r.value}" for r in wire.Reason}
    wanted |= {f"role.{r.value}" for r in roles.Role}
    wanted |= {f"kind.{k}" for k in ROOM_KINDS}
    wanted |= {f"alarm.{k.value}" for k in AlarmKind} | {f"alarm.{k}" for k in EXPECTED_ALARM_KINDS}
    wanted |= {f"bye.{r}" for r in BYE_REASONS}
    # every server package, wherever the wire and relay modules live (signaling/, protocol/, ...)
    packages = [d for d in REPO_ROOT.iterdir() if (d / "__init__.py").exists()
                and d.name not in ("tests", "clients", "bench", "dsp", "recorder")]
    server = "\n".join(p.read_text() for d in packages for p in d.rglob("*.py"))
    end_reasons = set(re.findall(r"\.end\(\s*\"([a-z_]+)\"", server))
    assert {"ended_by_host", "empty"} <= end_reasons, end_reasons
    wanted |= {f"ended.{r}" for r in end_reasons}
    stream_end = set(re.findall(r"StreamEnded\([^,()]+(?:\([^()]*\))?,\s*\"([a-z_]+)\"", server))
    assert stream_end, "no StreamEnded reasons found in the server"
    wanted |= {f"stream_ended.{r}" for r in stream_end}
    states = set(re.findall(r'_setState\("([a-z]+)"\)', (WEB / "js" / "signaling.js").read_text()))
    assert {"connecting", "joined", "reconnecting", "closed", "ended"} <= states, states
    wanted |= {f"state.{s}" for s in states}
    wanted |= {f"quality.{g}" for g in ("good", "fair", "poor", "unknown")}
    # fallbacks for values a newer server may send
    wanted |= {"reason.unknown", "alarm.unknown", "ended.unknown", "bye.unknown", "stream_ended.unknown",
               "role.unknown", "kind.unknown"}
    for lang in ("zh", "en"):
        missing = sorted(wanted - set(tabs[lang]))
        assert not missing, f"{lang}: no words for {missing}"
    assert typing.get_args(wire.ServerMessage)  # the wire module is the one the server speaks


class _Text(html.parser.HTMLParser):
    """Text nodes outside <script>/<style>, with the tag stack they sit in."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.texts: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "link", "br", "input", "img"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if data.strip() and not {"script", "style"} & set(self.stack):
            self.texts.append(("/".join(self.stack), data.strip()))


@pytest.mark.parametrize("page", sorted(p.name for p in WEB.glob("*.html") if p.name not in DEV_PAGES))
def test_pages_carry_no_text_outside_the_tables(page: str) -> None:
    parser = _Text()
    parser.feed((WEB / page).read_text())
    stray = [(where, text) for where, text in parser.texts if text != "medstream"]
    assert not stray, f"{page}: text not from the string tables: {stray}"
    assert 'lang="zh-CN"' in (WEB / page).read_text()  # before the script sets the chosen one


def test_scripts_write_no_literal_sentences() -> None:
    """Words reach the screen through t(): no `textContent = "words"`, toast("words") or
    confirm("words") in the page scripts."""
    literal = re.compile(r"""(textContent\s*=\s*|toast\(\s*|confirm\(\s*|_banner\(\s*)(["'`])(.*?)\2""")
    for name, text in js_sources().items():
        hits = []
        for m in literal.finditer(text):
            words = re.sub(r"\$\{[^}]*\}", "", m.group(3))
            if m.group(1).startswith("_banner") and re.fullmatch(r"[a-z0-9_.]+", words):
                continue  # _banner("key") passes a key, not words
            if re.search(r"[A-Za-z]{3}", words):
                hits.append(m.group(0))
        assert not hits, f"{name}: literal sentences {hits}"
