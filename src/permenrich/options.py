"""Every option of every mode and its rule, in one place, checked before any file is read
or any backend is built (:func:`check_options`, called first by the runner).

Choices are listed once here; numbers have their ranges in :func:`check_options`. A
mistake is one :class:`~permenrich.errors.OptionError` naming the option as the caller
spells it (``collapse=`` from Python, ``--collapse`` on the command line), what is
allowed and what arrived.
"""

from __future__ import annotations

from typing import Any

from ._pipeline import check_choice, check_run_options, parse_memory
from .backends import DEVICES
from .enrich.linear import SET_STATISTICS
from .errors import OptionError, option
from .io.rnk import DUPLICATE_POLICIES
from .streaming import NORMALISATIONS

#: Options that take one of a few names (the lists live with the code that uses them).
CHOICES: dict[str, tuple[str, ...]] = {
    "set_statistic": SET_STATISTICS,
    "collapse": ("mean", "max", "median"),
    "nan_policy": ("error", "drop"),
    "zero_variance": ("error", "drop"),
    "normalize": NORMALISATIONS,
    "pseudobulk_method": ("sum", "mean"),
    "alternative": ("two-sided", "greater", "less"),
    "direction": ("up", "down", "both"),
    "duplicates": DUPLICATE_POLICIES,
    "device": DEVICES,
    "mode": ("gsea", "genes"),
    "p_method": ("permutation", "multilevel"),
    "method": ("stouffer", "fixed", "random"),
    "join": ("inner", "outer"),
}

#: The default of ``min_cells``: another value without ``pseudobulk`` would be ignored.
DEFAULT_MIN_CELLS = 10

#: Largest multilevel sample: each level keeps this many random sets per gene set, and
#: the error estimate's digamma terms fail beyond float range (a 1e20 sample was a
#: traceback after every permutation had run).
MAX_SAMPLE_SIZE = 100_000


def _positive_integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__") or int(value) < 1:
        raise OptionError(f"{option(name)} must be a positive integer, got {value!r}")
    return int(value)


def check_options(options: dict[str, Any]) -> None:
    """Check the options of a run (any subset of a mode's keywords).

    Raises
    ------
    OptionError
        The first option outside its rule.
    """
    from .stats.metrics import get_metric

    for name, choices in CHOICES.items():
        if name in options:
            # meta() alone has an ora mode (contrasts run gsea or genes).
            check_choice(name, options[name], choices + ("ora",) if name == "mode" and "studies" in options
                         else choices)
    if "metric" in options:
        get_metric(options["metric"])
    if "permutations" in options:
        check_run_options(permutations=options["permutations"], seed=options.get("seed", 0),
                          batch_size=options.get("batch_size"), threads=options.get("threads"),
                          weight=options.get("weight"))
    if "memory" in options:
        parse_memory(options["memory"])
    if "min_size" in options or "max_size" in options:
        smallest = _positive_integer("min_size", options.get("min_size", 1))
        largest = _positive_integer("max_size", options.get("max_size", smallest))
        if smallest > largest:
            raise OptionError(f"{option('min_size', smallest)} is above {option('max_size', largest)}; "
                              "no gene set could be kept")
    if "min_cells" in options:
        value = options["min_cells"]
        if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 0:
            raise OptionError(f"{option('min_cells')} must be a non-negative integer (0 keeps every pseudo-sample), "
                              f"got {value!r}")
        if "pseudobulk" in options and options["pseudobulk"] is None and int(value) != DEFAULT_MIN_CELLS:
            raise OptionError(f"{option('min_cells', value)} drops small pseudo-samples, and this run makes none: give "
                              f"{option('pseudobulk')} (the donor column), or drop {option('min_cells')}")
    if options.get("pseudobulk") is None and options.get("pseudobulk_method", "sum") != "sum" \
            and "pseudobulk" in options:
        raise OptionError(f"{option('pseudobulk_method', options['pseudobulk_method'])} says how cells are combined "
                          f"into pseudo-samples, and this run makes none: give {option('pseudobulk')} (the donor "
                          f"column), or drop {option('pseudobulk_method')}")
    if options.get("top") is not None:
        _positive_integer("top", options["top"])
    if options.get("fdr") is not None:
        fdr = options["fdr"]
        if isinstance(fdr, bool) or not isinstance(fdr, (int, float)) or not 0 < float(fdr) < 1:
            raise OptionError(f"{option('fdr')} must lie in (0, 1), got {fdr!r}")
    if "sample_size" in options and not 3 <= _positive_integer("sample_size", options["sample_size"]) <= \
            MAX_SAMPLE_SIZE:
        raise OptionError(f"{option('sample_size')} must lie between 3 and {MAX_SAMPLE_SIZE:,} (fgsea's default is "
                          f"101; a larger sample narrows log2err slowly), got {options['sample_size']!r}")
    if "eps" in options:
        eps = options["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= float(eps) < 1:
            raise OptionError(f"{option('eps')} must lie in [0, 1), got {eps!r}")
    if options.get("covariates") is not None:
        covariates = options["covariates"]
        if not isinstance(covariates, str) and len(covariates) == 0:  # as --covariates "," is: not an unadjusted run
            raise OptionError(f"{option('covariates')} names no column; give e.g. ['age', 'sex'], or leave it None "
                              "for an unadjusted run")
        if isinstance(covariates, str) or not all(isinstance(c, str) and c for c in covariates):
            raise OptionError(f"{option('covariates')} must be a list of column names, got {covariates!r}")
        if options.get("metric") not in ("student_t", "pearson"):
            raise OptionError(f"{option('covariates')} make the statistic the t of the phenotype in a linear model: "
                              f"use {option('metric', 'student_t')} for two groups or {option('metric', 'pearson')} "
                              f"for a continuous phenotype, not {options.get('metric')!r}")
        if options.get("pairs") is not None:
            raise OptionError(f"{option('pairs')} cannot be combined with {option('covariates')}; use "
                              f"{option('strata')} for the pairs")
    _check_nothing_ignored(options)
    if options.get("layer") is not None and not isinstance(options["layer"], str):
        raise OptionError(f"{option('layer')} must be the name of a layer (e.g. 'counts'), got {options['layer']!r}")
    if "use_raw" in options and not isinstance(options["use_raw"], bool):
        raise OptionError(f"{option('use_raw')} must be True or False, got {options['use_raw']!r}")
    if options.get("strata") is not None and options.get("pairs") is not None:
        raise OptionError(f"give either {option('strata')} or {option('pairs')}, not both")


def differs_from_default(value: Any, default: Any) -> bool:
    """Whether an option was given a value other than its default (None: not given):
    numbers compare by value (np.int64(1000) is the default 1000), a bool is not a
    number, and a bool default takes any truthy or falsy value."""
    import numbers

    import numpy as np

    if value is None:
        return False
    if isinstance(default, bool):
        return bool(value) != default
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, numbers.Number) and isinstance(default, numbers.Number):
        return value != default
    return not (isinstance(value, type(default)) and value == default)


def _check_nothing_ignored(options: dict[str, Any]) -> None:
    """Refuse an option that the rest of the run would ignore: the user meant something by it."""
    from .enrich.multilevel import DEFAULT_EPS, DEFAULT_SAMPLE_SIZE

    if "p_method" in options and options["p_method"] != "multilevel":
        for name, default in (("sample_size", DEFAULT_SAMPLE_SIZE), ("eps", DEFAULT_EPS)):
            if options.get(name, default) != default:
                raise OptionError(f"{option(name)} sets the multilevel p-values; give "
                                  f"{option('p_method', 'multilevel')} too, or drop {option(name)}")
    weight = options.get("weight", 1.0)
    if options.get("set_statistic") in ("mean", "maxmean") and weight is not None and weight != 1.0:
        raise OptionError(f"{option('weight')} weighs the running sum (set statistic ks); "
                          f"{option('set_statistic', options['set_statistic'])} averages the gene statistics "
                          f"unweighted: drop {option('weight')}")
    if "studies" in options and options.get("mode", "genes") != "ora":
        for name, default in (("top", None), ("direction", "both")):
            if options.get(name, default) != default:
                raise OptionError(f"{option(name)} chooses the genes of {option('mode', 'ora')}; give that mode, or "
                                  f"drop {option(name)}")
    if "studies" in options:
        import inspect

        from .modes.meta import meta

        mode = options.get("mode", "genes")
        defaults = {name: p.default for name, p in inspect.signature(meta).parameters.items()}
        for name, modes in (("set_statistic", ("gsea",)), ("weight", ("gsea",)), ("min_size", ("gsea", "ora")),
                            ("max_size", ("gsea", "ora"))):
            if mode not in modes and differs_from_default(options.get(name), defaults[name]):
                uses = " or ".join(option("mode", m) for m in modes)
                raise OptionError(f"{option(name)} applies to {uses}, not to {option('mode', mode)}: give that mode, "
                                  f"or drop {option(name)}")
    if "studies" in options and options.get("mode", "genes") == "genes" and options.get("gene_sets") is not None:
        raise OptionError(f"{option('gene_sets')} are tested with {option('mode', 'gsea')} or "
                          f"{option('mode', 'ora')}; the default mode genes tests genes: give a mode, or drop "
                          f"{option('gene_sets')}")
