"""Generated parts of the docs: the registry summary and the error catalogue in
docs/language.md, and the argument reference of every entry in docs/reference.md (each
argument's type, allowed values, bounds, default and meaning, read from its schema).

`python -m gfdsl.docs` rewrites the text between the `<!-- generated:... -->` markers;
tests/test_docs.py fails when a checked-in page differs from what this prints, so the
reference cannot drift from the code. Only gfdsl's own entries are listed (a plugin's
are shown by `gfdsl list` and `gfdsl explain NAME`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gfdsl.errors import CATALOGUE
from gfdsl.library import REGISTRY
from gfdsl.library.registry import Args
from gfdsl.plugins import show_value

TITLES = {"kernel": "Kernels (`forward = ...`, `backward = ...`)", "prior": "Priors (`source x ~ ...`)",
          "net": "Nets (`net name = ...`)", "schedule": "Schedules (`schedule name = ...`)",
          "dataset": "Data sets (`dataset = ...`)", "objective": "Objective terms (`objective = ...`)",
          "reward": "Rewards (`reward = ...`)", "energy": "Energies (`energy = ...`, R(x) = exp(-E(x)))",
          "action": "Actions (`action name = ...`)", "policy": "Policies over actions (`policy forward = ...`)",
          "condition": "Condition distributions (`condition beta : real ~ ...`)"}


def _args(entry) -> str:
    out = []
    for n, f in entry.args.model_fields.items():
        name = f.alias or n
        out.append(f"`{name}`" if f.is_required() else f"`{name} = {show_value(f.default)}`")
    return ", ".join(out) or "none"


def registry_md() -> str:
    lines = []
    for kind, title in TITLES.items():
        lines += [f"### {title}", ""]
        if kind == "kernel":
            lines += ["| name | arguments | directions | learned | capabilities | what it is |",
                      "|---|---|---|---|---|---|"]
        else:
            lines += ["| name | arguments | what it is |", "|---|---|---|"]
        for e in builtin(kind):
            doc = e.doc.replace("|", "\\|")
            if kind == "kernel":
                learned = "yes" if "net" in e.args.model_fields else "no"
                lines.append(f"| `{e.name}` | {_args(e)} | {', '.join(sorted(e.directions))} | {learned} | "
                             f"{', '.join(sorted(e.caps)) or '-'} | {doc} |")
            else:
                lines.append(f"| `{e.name}` | {_args(e)} | {doc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def builtin(kind: str) -> list:
    return [e for e in REGISTRY.all(kind) if e.source == "gfdsl"]


def reference_md() -> str:
    """One table per entry: argument | type (allowed values, bounds) | default | meaning."""
    from gfdsl.plugins import describe

    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = []
    for kind, title in TITLES.items():
        entries = builtin(kind)
        if not entries:
            continue
        lines += [f"## {title}", ""]
        for e in entries:
            lines += [f"### `{e.name}`", "", esc(e.doc), ""]
            usage = " ".join((e.args.__doc__ or "").split())
            if usage and e.args.__doc__ != Args.__doc__:
                lines += [esc(usage), ""]
            rows = describe(e)
            if not rows:
                lines += ["No arguments.", ""]
                continue
            lines += ["| argument | type | default | meaning |", "|---|---|---|---|"]
            lines += [f"| `{n}` | {esc(t)} | {esc(d)} | {esc(w)} |" for n, t, d, w in rows]
            lines.append("")
    from gfdsl.library.settings import NEEDS, TrainSettings

    lines += ["## Train settings (`train { ... }`, `--set NAME=VALUE`)", "",
              "| setting | type | default | meaning | only for |", "|---|---|---|---|---|"]
    lines += [f"| `{n}` | {esc(t)} | {esc(d)} | {esc(w)} | {NEEDS.get(n, '')} |" for n, t, d, w in describe(TrainSettings)]
    return "\n".join(lines).rstrip() + "\n"


def errors_md() -> str:
    lines = ["| code | message | hint |", "|---|---|---|"]
    for code, (msg, hint) in CATALOGUE.items():
        esc = lambda s: s.replace("|", "\\|").replace("{{", "{").replace("}}", "}")  # noqa: E731
        lines.append(f"| {code} | {esc(msg)} | {esc(hint) if hint != '{hint}' else '(specific)'} |")
    return "\n".join(lines) + "\n"


SECTIONS = {"registry": registry_md, "errors": errors_md}
PAGES = {"language.md": SECTIONS, "reference.md": {"reference": reference_md}}


def render(text: str, sections: dict | None = None) -> str:
    for name, fn in (sections or SECTIONS).items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        text = pat.sub(lambda m, fn=fn: m.group(1) + fn() + m.group(2), text)
    return text


def main() -> int:
    stale = 0
    for page, sections in PAGES.items():
        path = Path(__file__).resolve().parent.parent / "docs" / page
        old = path.read_text(encoding="utf-8")
        new = render(old, sections)
        stale += new != old
        if "--check" not in sys.argv:
            path.write_text(new, encoding="utf-8")
    return 1 if stale and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
