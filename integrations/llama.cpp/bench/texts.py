#!/usr/bin/env python3
"""Writes the benchmark texts into DIR: two kinds of text from Debian packages that
nobody tuned the library on (its tuning used dpkg docs, vim docs and licence texts).

  manual.txt  the QEMU storage daemon QMP reference (package qemu-utils:
              /usr/share/doc/qemu-utils/qemu-storage-daemon-qmp-ref.html), tags stripped
  code.txt    Python 3.11 standard library source (package libpython3.11-minimal /
              libpython3.11-stdlib): typing.py, argparse.py, dataclasses.py, pathlib.py

Usage: texts.py DIR   (prints each file with its size; exits 1 if a source is missing)
"""
import html.parser
import os
import re
import sys

MANUAL = "/usr/share/doc/qemu-utils/qemu-storage-daemon-qmp-ref.html"
CODE = ["/usr/lib/python3.11/" + f for f in ("typing.py", "argparse.py", "dataclasses.py", "pathlib.py")]


class Text(html.parser.HTMLParser):
    """The visible text of an HTML page, one block element per line."""

    BLOCK = {"p", "div", "br", "li", "dt", "dd", "tr", "h1", "h2", "h3", "h4", "pre", "table", "section"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    missing = [p for p in [MANUAL] + CODE if not os.path.exists(p)]
    if missing:
        sys.exit("missing (install qemu-utils and python3.11): " + ", ".join(missing))
    t = Text()
    with open(MANUAL, encoding="utf-8") as f:
        t.feed(f.read())
    manual = re.sub(r"\n[ \t]*\n(\s*\n)+", "\n\n", "".join(t.out)).strip() + "\n"
    code = ""
    for p in CODE:
        with open(p, encoding="utf-8") as f:
            code += f"# ---- {os.path.basename(p)} ----\n" + f.read() + "\n"
    for name, body in (("manual.txt", manual), ("code.txt", code)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write(body)
        print(f"{os.path.join(out, name)}: {len(body)} characters")


if __name__ == "__main__":
    main()
