"""Check the built documentation site: nothing is loaded from a network, and math is typeset.

Usage: ``python .ci/check_site.py SITE_DIR [--browser CHROMIUM]``.

1. Every HTML and CSS file is scanned for scripts, stylesheets, images, fonts and other
   resources with an absolute (``http:``, ``https:``, ``//``) address; links a reader follows
   (``<a href>``) are allowed.
2. With ``--browser``, headless Chromium opens an API reference page from disk with every host
   name unresolvable (``--host-resolver-rules``), waits for scripts, and dumps the DOM: every
   formula must have become a MathJax ``mjx-container`` with no TeX error, and no raw TeX
   (``\\begin{aligned}``) may be left on the page.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REMOTE = r"""(?:https?:)?//[^"'\s)>]+"""
HTML_LOADS = re.compile(
    rf"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*["']?({REMOTE})"""
    rf"""|<link\b[^>]*\bhref\s*=\s*["']?({REMOTE})""",
    re.IGNORECASE,
)
CSS_LOADS = re.compile(rf"""(?:url\(\s*["']?|@import\s+["'])({REMOTE})""", re.IGNORECASE)
PAGE = "reference/optimizers/index.html"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--allow-file-access-from-files",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no host resolves: a network load would fail
    "--virtual-time-budget=30000",
    "--dump-dom",
]


def remote_loads(site: Path) -> list[str]:
    """``file: address`` for every resource a page or stylesheet would fetch from a network."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in {".html", ".css"}:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".html":
            for match in HTML_LOADS.finditer(text):
                url = match.group(1) or match.group(2)
                tag = match.group(0)
                if tag.lower().startswith("<link") and re.search(
                    r"""rel\s*=\s*["']?(?:canonical|alternate|author|license)""", tag, re.I
                ):
                    continue  # metadata, not loaded
                found.append(f"{path.relative_to(site)}: {url}")
        else:
            found += [f"{path.relative_to(site)}: {m.group(1)}" for m in CSS_LOADS.finditer(text)]
    return found


def typeset_problems(site: Path, browser: str) -> list[str]:
    page = site / PAGE
    source = page.read_text()
    formulas = source.count('class="arithmatex"')
    if formulas < 10 or "\\begin{aligned}" not in source:
        return [f"{PAGE} has {formulas} formulas, expected an algorithm box of raw TeX"]
    proc = subprocess.run(
        [browser, *CHROMIUM_FLAGS, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    dom = proc.stdout
    if proc.returncode != 0 or "</html>" not in dom:
        return [f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"]
    typeset = dom.count("<mjx-container")
    errors = dom.count("data-mjx-error") + dom.count("<mjx-merror")
    print(f"site check: {PAGE}: {formulas} formulas in the HTML, {typeset} typeset by MathJax "
          f"(SVG) in headless Chromium with no network, {errors} TeX errors")  # fmt: skip
    problems = []
    if typeset < formulas:
        problems.append(f"only {typeset} of {formulas} formulas were typeset")
    if errors:
        problems.append(f"{errors} formulas failed to typeset (MathJax error)")
    if "\\begin{aligned}" in dom:
        problems.append("raw TeX (\\begin{aligned}) is still on the page")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("site", type=Path)
    parser.add_argument("--browser", help="a Chromium executable: also check the math typesets")
    args = parser.parse_args()
    problems = [f"loads {r}" for r in remote_loads(args.site)]
    if not problems:
        print(f"site check: no page or stylesheet of {args.site} loads anything from a network")
    if args.browser:
        problems += typeset_problems(args.site, args.browser)
    for p in problems:
        print("site check:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
