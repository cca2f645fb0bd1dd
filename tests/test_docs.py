"""The README and docs/: every relative link resolves, every page is on the README's map, and the README's two
commands are the Makefile's (the ones .ci/run and a newcomer run)."""

import re

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(page) -> list[str]:
    out = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            out.append(f"{page.name}: {target}")
    return out


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert [line for page in pages() for line in broken_links(page)] == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[fine](page.md) [web](https://example.org) [here](#top) [gone](docs/nowhere.md#part)")
    assert broken_links(page) == ["page.md: docs/nowhere.md#part"]


def test_every_docs_page_is_on_the_readmes_map_and_says_what_it_is_for():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"{page.name} is not on the README's map"
        title, _, rest = page.read_text().partition("\n\n")
        assert title.startswith("# ") and rest.strip(), f"{page.name}: a title, then what the page is for"


def test_the_readmes_two_commands_are_the_makefiles():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash\n")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make repro", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("repro", "test"):
        assert re.search(rf"^{target}: ", makefile, re.M), target
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert len(readme.encode()) <= 10_500, "the README is a page a person reads in two minutes"
