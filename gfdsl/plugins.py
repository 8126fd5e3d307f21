"""Extensions: registry entries from other Python packages (docs/extending.md).

A plugin is a Python module that declares entries -- rewards, energies, nets, data sets --
each with a pydantic argument model (a subclass of `Args`) and a torch implementation:

    from gfdsl.plugins import Args, PosInt, reward

    class IsingArgs(Args):
        n: PosInt = 4
        beta: float = 0.4

    reward("ising", IsingArgs, "the Ising model on an n x n torus", types=("seq",),
           need="spin sequences (seq(2)[n * n])", build="my_plugin.torch_half:Ising")

It is found in one of two ways: installed, through the entry-point group `gfdsl.plugins`
(pyproject: `[project.entry-points."gfdsl.plugins"] ising = "my_plugin"`), or named on
the command line, `gfdsl ... --plugin my_plugin` (a module on the path, or a .py file).
A spec names an entry exactly as a built-in one, and the checker validates its arguments
the same way, with line and column; spec text never names Python code.

This module is torch-free: the front end (check, render, fmt) imports a plugin's
declarations only; `build` -- the torch half, a callable or "module:attribute" -- is
imported when the model is lowered, and is called as build(args, ctx) with the IR's
argument dict and a `Context`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from gfdsl.errors import GfdslError, diag
from gfdsl.library.registry import (  # noqa: F401  (re-exported for plugin authors)
    REGISTRY, Args, CondRef, Entry, NetRef, NonNegInt, PosFloat, PosInt, Problem, StateType,
)

GROUP = "gfdsl.plugins"
OPEN_KINDS = ("reward", "energy", "net", "dataset", "schedule")  # the kinds a plugin may add

# plugin name -> where it came from: 'entry point <name> = <value>' or '--plugin <module>'
LOADED: dict[str, str] = {}
ROOTS: dict[str, str] = {}  # top-level module name of a plugin's code -> the plugin's name
MODULES: list[str] = []  # the --plugin arguments loaded, .py files as absolute paths (run.json keeps them)
_staging: list[Entry] | None = None  # entries declared by the plugin being imported
_installed_done = False


@dataclass(frozen=True)
class Context:
    """What a build function may need besides its arguments.

    entry      the entry's name, as the spec wrote it
    kind       reward | energy | net | dataset
    space      a reward or energy on an action space: the gfdsl.runtime.spaces.Space
               (its states are (B, n) integer tensors; None for real-valued states)
    inputs     gfdsl.files.Inputs: `inputs.resolve(path)` finds a file beside the spec
    data_type  a data set: the data state's attributes (dtype, shape)
    """

    entry: str
    kind: str
    space: Any = None
    inputs: Any = None
    data_type: dict | None = None


# -- declaring entries -------------------------------------------------------------------------


def reward(name: str, args: type[Args], doc: str, *, build, types: tuple[str, ...], need: str,
           rule: Callable | None = None) -> Entry:
    """A reward R(x) > 0 of the terminal state. `build(args, ctx)` returns an nn.Module
    mapping terminal states (B, n) to log R (B,); `types` are the state types it reads
    ("int", "seq", "set", "real"), `need` says so in words for E410; `rule(args, state_type)`
    may return a Problem (code and argument to point at) when the state does not fit."""
    return _declare(Entry(name, "reward", args, doc, build=build,
                          info=_target_info(types, need, rule)))


def energy(name: str, args: type[Args], doc: str, *, build, types: tuple[str, ...] = ("real",),
           need: str = "real vectors", rule: Callable | None = None) -> Entry:
    """An energy E(x), R = exp(-E): as reward(); the module returns log R = -E (B,)."""
    return _declare(Entry(name, "energy", args, doc, build=build, info=_target_info(types, need, rule)))


def net(name: str, args: type[Args], doc: str, *, build, facts: Callable, size: Callable) -> Entry:
    """A network. `facts(args)` gives (flat input size, flat output size, time-embedding
    width; 0 when it reads no step) so the checker matches it to the kernels using it;
    `size(args)` gives (parameters, activation floats kept per input row, flops per row)
    for the resource estimate. `build(args, ctx)` returns an nn.Module called as
    net(x (B, in), t (B,) or None) -> (B, out)."""
    return _declare(Entry(name, "net", args, doc, build=build, info={"facts": facts, "size": size}))


def dataset(name: str, args: type[Args], doc: str, *, build, yields: Callable | None = None) -> Entry:
    """A data set. `build(args, ctx)` returns (train, test) tensors of shape (N, n) for the
    data state (ctx.data_type), or (train, test, (train_labels, test_labels));
    `yields(args)` lists the (dtype, classes, numel) one example may be, or None."""
    return _declare(Entry(name, "dataset", args, doc, build=build,
                          info={"yields": yields or (lambda a: None), "labels": lambda a: None}))


def schedule(name: str, args: type[Args], doc: str, *, build) -> Entry:
    """A noise schedule for Gaussian diffusion steps (`schedule beta = name(steps = T, ...)`).
    Its arguments must include `steps` (the chain length it serves); `build(args, ctx)`
    returns the betas beta_1..beta_T as a (steps,) tensor of values in (0, 1)."""
    return _declare(Entry(name, "schedule", args, doc, build=build))


def _target_info(types_: tuple[str, ...], need: str, rule) -> dict:
    return {"types": tuple(types_), "need": need, "rule": rule, "log_z": None, "samples": False}


def _declare(e: Entry) -> Entry:
    if _staging is not None:
        _staging.append(e)
    else:  # a module imported by hand (a user's own script): registered at once
        _commit(_caller_name(), [e])
    return e


def _caller_name() -> str:
    frame = sys._getframe(3)
    return frame.f_globals.get("__name__", "python").split(".")[0]


# -- loading -------------------------------------------------------------------------------------


def _fail(plugin: str, why: str, hint: str = "") -> GfdslError:
    return GfdslError([diag("E710", None, None, path="gfdsl", plugin=plugin, why=why,
                            hint=hint or "fix the plugin, or leave it out")])


def load_installed() -> None:
    """Import every plugin installed under the entry-point group (once per process)."""
    global _installed_done
    if _installed_done:
        return
    _installed_done = True
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        package = ep.dist.name if getattr(ep, "dist", None) is not None else ep.name  # the source package
        _load(package, f"entry point {ep.name} = {ep.value}", ep.load)


def load_module(spec: str) -> str:
    """Import a plugin named on the command line: a dotted module name (looked up from the
    current folder too) or a path to a .py file; returns the plugin's name."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise _fail(spec, "is not a file", "give a .py file that exists, or an importable module name")
        name = path.stem

        def imp():
            s = importlib.util.spec_from_file_location(f"gfdsl_plugin_{name}", path)
            mod = importlib.util.module_from_spec(s)
            sys.modules[s.name] = mod
            s.loader.exec_module(mod)
            return mod
    else:
        name = spec
        if not all(p.isidentifier() for p in spec.split(".")):
            raise _fail(spec, "is neither a module name nor a .py file")

        def imp():
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.append(str(Path.cwd()))
            return importlib.import_module(spec)
    if name not in LOADED:
        _load(name, f"--plugin {spec}", imp)
        MODULES.append(str(path.resolve()) if spec.endswith(".py") else spec)
    return name


def load(modules: list[str] | None = None) -> None:
    """The installed plugins, then the named ones (the CLI calls this before a command)."""
    load_installed()
    for m in modules or ():
        load_module(m)


def _load(name: str, origin: str, imp: Callable) -> None:
    global _staging
    if name in LOADED:
        return
    _staging = staged = []
    try:
        obj = imp()
        if callable(obj) and not isinstance(obj, types.ModuleType):
            obj()  # an entry point may name a register() function instead of a module
    except GfdslError:
        raise
    except Exception as e:  # the plugin's own code failed: name it, not gfdsl
        raise _fail(name, f"failed to import ({origin}): {type(e).__name__}: {e}",
                    "run `python -c 'import <module>'` to see the traceback") from None
    finally:
        _staging = None
    _commit(name, staged)
    LOADED[name] = origin
    if isinstance(obj, types.ModuleType):
        ROOTS[obj.__name__.split(".")[0]] = name
    for e in staged:  # where its torch halves live
        mod = e.build.__module__ if callable(e.build) else str(e.build).partition(":")[0]
        ROOTS.setdefault(mod.split(".")[0], name)


def _commit(plugin: str, entries: list[Entry]) -> None:
    """Check every entry, then add them all, or none."""
    for e in entries:
        _check_entry(plugin, e)
    seen = set()
    for e in entries:
        if (e.kind, e.name) in seen:
            raise _fail(plugin, f"declares {e.kind} '{e.name}' twice")
        seen.add((e.kind, e.name))
    for e in entries:
        e.source = plugin
        REGISTRY.add(e)


def _check_entry(plugin: str, e: Entry) -> None:
    if e.kind not in OPEN_KINDS:
        raise _fail(plugin, f"declares a {e.kind}, but plugins may add only {', '.join(OPEN_KINDS)}")
    if not e.name.isidentifier() or e.name.startswith("_"):
        raise _fail(plugin, f"declares the name '{e.name}', which a spec cannot write (letters, digits and '_', "
                            "not starting with '_')")
    other = REGISTRY.kind_of(e.name)
    if other is not None:
        owner = next(x for x in REGISTRY.all(other) if x.name == e.name).source
        raise _fail(plugin, f"declares {e.kind} '{e.name}', but {other} '{e.name}' already comes from {owner}",
                    "rename the plugin's entry: built-in names and other plugins' names are taken")
    if not (isinstance(e.args, type) and issubclass(e.args, Args)):
        raise _fail(plugin, f"declares {e.kind} '{e.name}' with arguments {e.args!r}, not a subclass of "
                            "gfdsl.plugins.Args (a pydantic model that refuses unknown arguments)")
    for field, info in e.args.model_fields.items():
        bad = _unwritable(info.annotation)
        if bad is not None:
            raise _fail(plugin, f"declares {e.kind} '{e.name}' with argument '{info.alias or field}' of type "
                                f"{bad}, which a spec cannot write",
                        "use int, float, bool, str, a Literal, a list of these, None, NetRef or CondRef")
    try:
        e.args.model_validate({})
    except Exception as err:  # required arguments are fine; a default that fails is not
        if any(x.get("type") != "missing" for x in getattr(err, "errors", lambda: [])()):
            raise _fail(plugin, f"declares {e.kind} '{e.name}' whose defaults fail its own schema: "
                            f"{' '.join(str(err).split())}") from None
    if e.build is None or not (callable(e.build) or (isinstance(e.build, str) and ":" in e.build)):
        raise _fail(plugin, f"declares {e.kind} '{e.name}' with build = {e.build!r}, not a callable or "
                            "'module:attribute'")
    if e.kind == "schedule" and "steps" not in e.args.model_fields:
        raise _fail(plugin, f"declares schedule '{e.name}' without a `steps` argument (the chain length it serves)")
    needed = {"net": ("facts", "size")}.get(e.kind, ())
    for key in needed:
        if not callable(e.info.get(key)):
            raise _fail(plugin, f"declares net '{e.name}' without a {key}(args) function")


_LEAVES = (int, float, bool, str, type(None))


def _unwritable(t) -> str | None:
    """None if a spec can write a value of annotation t, else t's name."""
    if t in _LEAVES or t is typing.Any:
        return None
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return None
    if origin is typing.Annotated:
        return _unwritable(typing.get_args(t)[0])
    if t is REGISTRY_REF:
        return None
    if origin in (list, tuple, typing.Union, types.UnionType):
        for a in typing.get_args(t):
            if a is not Ellipsis and _unwritable(a) is not None:
                return _unwritable(a)
        return None
    return getattr(t, "__name__", repr(t))


from gfdsl.library.registry import Ref as REGISTRY_REF  # noqa: E402


# -- building (the lowering calls this) ------------------------------------------------------------


def blame(tb) -> tuple[str, str] | None:
    """(plugin, 'file:line') of the innermost traceback frame in a plugin's code, if any:
    an exception a plugin's module raised at run time is the plugin's, not gfdsl's."""
    found = None
    while tb is not None:
        root = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if root in ROOTS:
            found = (ROOTS[root], f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}")
        tb = tb.tb_next
    return found


def resolve(e: Entry) -> Callable:
    """An entry's build callable, importing its module when given as 'module:attribute'."""
    b = e.build
    if callable(b):
        return b
    mod, _, attr = str(b).partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception as err:
        if e.source == "gfdsl":
            raise
        raise _fail(e.source, f"cannot import the torch half of {e.kind} '{e.name}' ({b}): "
                              f"{type(err).__name__}: {err}") from None


def construct(kind: str, name: str, args: dict, **ctx) -> Any:
    """Build entry `name` of `kind` from its IR arguments: the one path from a registry
    entry to its torch module, for built-in and plugin entries alike."""
    e = REGISTRY.get(kind, name)
    fn = resolve(e)
    c = Context(entry=name, kind=kind, **ctx)
    if e.source == "gfdsl":
        return fn(dict(args), c)
    try:
        out = fn(dict(args), c)
    except GfdslError:
        raise
    except Exception as err:
        raise _fail(e.source, f"failed to build {kind} {name}(): {type(err).__name__}: {err}") from None
    if kind == "schedule":
        return _betas(e.source, name, out, int(args["steps"]))
    if kind != "dataset" and not _is_module(out):
        raise _fail(e.source, f"built {kind} {name}() as a {type(out).__name__}, not a torch nn.Module")
    return out


def _betas(plugin: str, name: str, b, steps: int):
    """A plugin schedule's betas: a (steps,) float tensor in (0, 1), as float64."""
    torch = sys.modules.get("torch")
    if not (torch is not None and isinstance(b, torch.Tensor) and b.shape == (steps,)):
        shape = tuple(b.shape) if hasattr(b, "shape") else type(b).__name__
        raise _fail(plugin, f"built schedule {name}() as {shape}, not a ({steps},) tensor of betas")
    b = b.detach().double().cpu()
    if not (torch.isfinite(b).all() and (b > 0).all() and (b < 1).all()):
        raise _fail(plugin, f"built schedule {name}() with betas outside (0, 1)")
    return b


def _is_module(x) -> bool:
    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(x, nn.Module)


def describe(e: Entry | type[Args]) -> list[tuple[str, str, str, str]]:
    """(argument, type, default, description) rows of an entry's schema (or of an argument
    model): docs/reference.md, `gfdsl explain NAME` and `gfdsl list --args` all read these."""
    rows = []
    model = e.args if isinstance(e, Entry) else e
    for field, info in model.model_fields.items():
        default = "required" if info.is_required() else show_value(info.default)
        t = type_name(info.annotation)
        if info.annotation is REGISTRY_REF:  # NetRef, CondRef, ScheduleRef: the kind is in the validator
            t = next((f"{_ref_kind(m)} name" for m in info.metadata if hasattr(m, "func")), t)
        rows.append((info.alias or field, t + _bounds(info.metadata), default, info.description or ""))
    return rows


def _bounds(metadata) -> str:
    """' > 0, <= 100' from a field's annotated_types constraints."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >=", "max_length": "length <="}
    out = [f"{sym} {getattr(m, k)}" for m in metadata for k, sym in ops.items() if getattr(m, k, None) is not None]
    return f" ({', '.join(out)})" if out else ""


def show_value(v) -> str:
    """A default as a spec writes it: true, "eps", none, [256, 256]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "none"
    if isinstance(v, BaseModel):
        return repr(v)
    return str(v).replace("'", '"')


def type_name(t) -> str:
    """An annotation as a spec writer reads it: int, real, "a" | "b", list of int, ..."""
    if t is REGISTRY_REF:
        return "name"
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "real"
    if t is str:
        return "string"
    if t is type(None):
        return "none"
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is typing.Annotated:
        base = type_name(args[0])
        refs = [m for m in args[1:] if hasattr(m, "func")]
        return f"{_ref_kind(refs[0])} name" if refs and args[0] is REGISTRY_REF else base
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    return getattr(t, "__name__", str(t))


def _ref_kind(validator) -> str:
    cell = getattr(validator.func, "__closure__", None) or ()
    return next((c.cell_contents for c in cell if isinstance(c.cell_contents, str)), "a")
