"""The README and docs/ describe every setting the code reads, once, and every link in them leads somewhere.

Each page must stand on its own: a reference to another section is a link that resolves (the
file exists, and so does the heading or anchor it names), never a bare "see *Section*"."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from relay.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
SETTING = re.compile(
    r"\b(?:RELAY|KNOCK|MAILGUN|MANDRILL|BREVO|RESEND|POSTMARK|REDIS)_[A-Z_]+\b|\b(?:PORT|WEB_CONCURRENCY|LOG_LEVEL)\b"
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Modules under relay/providers/ that are not providers of their own, and the page that covers
# a provider module documented with another.
NOT_PROVIDERS = {"__init__", "base", "fetch"}
PAGE_OF_MODULE = {"ses_s3": "ses"}


def settings_read_by_the_code() -> set[str]:
    sources = [*ROOT.joinpath("relay").rglob("*.py"), ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
    names: set[str] = set()
    for source in sources:
        names.update(re.findall(r'["\'](' + SETTING.pattern + r')["\']', source.read_text()))
    return names - {"RELAY_TEST_REDIS_URL", "KNOCK_CIRCUIT_KEY"}  # the second is a Redis key's name


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def outside_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def settings_rows(page: Path) -> list[str]:
    """Settings named in the first cell of each table row of a page: where a setting is defined."""
    names = []
    for line in outside_code_blocks(page.read_text()).splitlines():
        if line.startswith("| `"):
            names.extend(SETTING.findall(line.split("|")[1]))
    return names


def anchors(page: Path) -> set[str]:
    text = outside_code_blocks(page.read_text())
    found = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_setting_the_code_reads_is_documented_exactly_once() -> None:
    rows = Counter(name for page in pages() for name in settings_rows(page))
    read = settings_read_by_the_code()
    assert not read - set(rows), f"not documented: {sorted(read - set(rows))}"
    assert not [name for name in read if rows[name] > 1], {name: rows[name] for name in read if rows[name] > 1}
    assert {name for page in pages() if page != CONFIGURATION for name in settings_rows(page)} == set()
    assert not set(rows) - read, f"documented but never read: {sorted(set(rows) - read)}"


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_resolves_and_the_page_stands_alone(page: Path) -> None:
    text = outside_code_blocks(page.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and (linked.is_dir() or anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, broken
    assert not re.findall(r"[Ss]ee \*[A-Z][^*]*\*|\(\*[A-Z][^*]*\*\)", text), "a bare section reference"
    assert "SPEC" not in text


def test_each_provider_module_has_its_own_page_linked_from_the_providers_index() -> None:
    index = (ROOT / "docs" / "providers" / "README.md").read_text()
    for module in sorted((ROOT / "relay" / "providers").glob("*.py")):
        if module.stem in NOT_PROVIDERS:
            continue
        name = PAGE_OF_MODULE.get(module.stem, module.stem)
        page = ROOT / "docs" / "providers" / f"{name}.md"
        assert page.exists(), module.stem
        assert f"({name}.md)" in index, name
        assert "## Connect it" in page.read_text(), name


def test_the_readme_is_a_first_visit() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in linked, page.name


def test_env_example_lists_every_variable_and_is_a_valid_configuration() -> None:
    lines = [line for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    assert settings_read_by_the_code() <= set(env), settings_read_by_the_code() - set(env)
    settings = load_settings({**env, "KNOCK_API_KEY": "key"})
    assert settings.require_durable_redis is True and settings.environment == "production"
