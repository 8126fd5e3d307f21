"""Generated parts of docs/language.md: the registry and the error catalogue.

`python -m gfdsl.docs` rewrites the text between the `<!-- generated:... -->` markers;
tests/test_docs.py fails when the checked-in page differs from what this prints, so
the reference cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gfdsl.errors import CATALOGUE
from gfdsl.library import REGISTRY

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
        out.append(f"`{name}`" if f.is_required() else f"`{name} = {_lit(f.default)}`")
    return ", ".join(out) or "none"


def _lit(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "none"
    return str(v)


def registry_md() -> str:
    lines = []
    for kind, title in TITLES.items():
        lines += [f"### {title}", ""]
        if kind == "kernel":
            lines += ["| name | arguments | directions | learned | capabilities | what it is |",
                      "|---|---|---|---|---|---|"]
        else:
            lines += ["| name | arguments | what it is |", "|---|---|---|"]
        for e in REGISTRY.all(kind):
            doc = e.doc.replace("|", "\\|")
            if kind == "kernel":
                learned = "yes" if "net" in e.args.model_fields else "no"
                lines.append(f"| `{e.name}` | {_args(e)} | {', '.join(sorted(e.directions))} | {learned} | "
                             f"{', '.join(sorted(e.caps)) or '-'} | {doc} |")
            else:
                lines.append(f"| `{e.name}` | {_args(e)} | {doc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def errors_md() -> str:
    lines = ["| code | message | hint |", "|---|---|---|"]
    for code, (msg, hint) in CATALOGUE.items():
        esc = lambda s: s.replace("|", "\\|").replace("{{", "{").replace("}}", "}")  # noqa: E731
        lines.append(f"| {code} | {esc(msg)} | {esc(hint) if hint != '{hint}' else '(specific)'} |")
    return "\n".join(lines) + "\n"


SECTIONS = {"registry": registry_md, "errors": errors_md}


def render(text: str) -> str:
    for name, fn in SECTIONS.items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        text = pat.sub(lambda m, fn=fn: m.group(1) + fn() + m.group(2), text)
    return text


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "docs" / "language.md"
    old = path.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in sys.argv:
        return 0 if new == old else 1
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
