"""The public functions keep explicit, documented signatures that cannot drift apart (as
scanpy checks its own): data first, options keyword-only, every parameter documented,
and an option shared by several modes has the same default and type everywhere."""

import inspect
import re

import pytest

import permenrich

PUBLIC = ["gsea", "prerank", "genes", "ora", "contrasts", "meta", "ora_lists"]
RUNNER = ["gsea", "prerank", "genes", "ora", "meta"]  # options_of(locals()) sends these to workers


def _function(name):
    return getattr(permenrich, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_options_are_keyword_only_and_documented(name):
    function = _function(name)
    signature = inspect.signature(function)
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{name}: at most the data, the phenotype and the gene sets are positional"
    doc = inspect.getdoc(function)
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc
    documented = set()
    for line in re.findall(r"^(\w[\w, ]*)$", doc.split("Returns\n-------")[0], flags=re.M):
        documented.update(part.strip() for part in line.split(","))
    missing = [p for p in signature.parameters if p not in documented
               and signature.parameters[p].kind != inspect.Parameter.VAR_KEYWORD]
    assert not missing, f"{name}: parameters not in its docstring: {missing}"
    for parameter in signature.parameters.values():
        if parameter.kind is not parameter.VAR_KEYWORD:
            assert parameter.annotation is not inspect.Parameter.empty, f"{name}.{parameter.name} has no type"


def test_shared_options_agree_across_modes():
    seen: dict[str, tuple] = {}
    for name in RUNNER:
        for parameter in inspect.signature(_function(name)).parameters.values():
            if parameter.default is inspect.Parameter.empty or parameter.name in ("permutations", "metric"):
                continue  # differ by mode on purpose (GSEA: 1,000, signal_to_noise; genes: 10,000, welch_t)
            key = (parameter.default, str(parameter.annotation))
            if parameter.name in seen:
                assert seen[parameter.name][1] == key, (
                    f"{name}.{parameter.name} = {key} but {seen[parameter.name][0]} has {seen[parameter.name][1]}")
            else:
                seen[parameter.name] = (name, key)


@pytest.mark.parametrize("name", RUNNER)
def test_every_mode_runs_on_a_client_and_reports_progress(name):
    parameters = inspect.signature(_function(name)).parameters
    assert "client" in parameters and "progress" in parameters
    assert parameters["client"].default is None and parameters["progress"].default is None


def test_cli_options_mirror_the_api():
    """Every command-line option of a mode is a keyword of its function (dashes for
    underscores), except the few that only exist on the command line."""
    from permenrich.cli import build_parser

    # --contrasts, --one-vs-rest and --lists route to contrasts() and ora_lists(); --manifest
    # is meta()'s first argument; --report writes OUT/report.html (permenrich.report).
    cli_only = {"help", "out", "quiet", "cls", "sample_sheet", "contrasts", "one_vs_rest", "scheduler",
                "scheduler_file", "rnk", "gene_list", "expr", "gene_sets", "lists", "manifest", "report"}
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public walk
    for name in ("gsea", "prerank", "genes", "ora", "meta"):
        keywords = set(inspect.signature(_function(name)).parameters)
        for action in commands[name]._actions:  # noqa: SLF001
            if action.dest in cli_only or not action.option_strings:
                continue
            assert action.dest in keywords, f"permenrich {name} --{action.dest.replace('_', '-')} is not an API option"


@pytest.mark.parametrize("bad, message", [
    (dict(collapse="mode"), "collapse= must be one of mean, max, median"),
    (dict(min_size=20, max_size=10), "min_size=20 is above max_size=10"),
    (dict(strata="batch", pairs="patient"), "give either strata= or pairs="),
    (dict(normalize="cpm"), "normalize= must be one of none, log1p_cpm"),
    (dict(device="tpu"), "device= must be one of cpu, gpu, auto"),
])
def test_options_are_checked_before_any_file_is_read(bad, message):
    """The inputs do not exist: the option is reported first, as one line."""
    with pytest.raises(permenrich.OptionError, match=re.escape(message)):
        permenrich.gsea("no-such-file.gct", "no-such-file.cls", "no-such-file.gmt", **bad)


def test_kernel_caches_dropped_when_any_source_changes(tmp_path):
    """Numba checks a cached kernel against its own file only; a change to any source
    (a helper compiled into kernels of other modules) must drop the in-tree caches."""
    from permenrich._compile import drop_stale_kernel_caches

    package, kernels = tmp_path / "package", tmp_path / "kernels"
    (package / "__pycache__").mkdir(parents=True)
    (kernels / "__pycache__").mkdir(parents=True)
    helper = package / "helper.py"
    helper.write_text("x = 1\n")
    (kernels / "device.py").write_text("y = 2\n")

    def cache_files() -> list:
        for root in (package, kernels):
            # index, data, and Numba-CUDA's launch-config marker
            for name in ("f-1.py311.nbi", "f-1.py311.1.nbc", "f-1.py311.lcs"):
                (root / "__pycache__" / name).write_bytes(b"cached")
        return sorted(tmp_path.rglob("*.[nl][bc][ics]"))

    assert len(cache_files()) == 6
    assert drop_stale_kernel_caches([package, kernels])  # first look: nothing recorded yet
    assert not list(tmp_path.rglob("*.[nl][bc][ics]"))
    cached = cache_files()
    assert not drop_stale_kernel_caches([package, kernels])  # unchanged sources: kept
    assert sorted(tmp_path.rglob("*.[nl][bc][ics]")) == cached
    helper.write_text("x = 10\n")  # a helper edited: every kernel may inline it
    assert drop_stale_kernel_caches([package, kernels])
    assert not list(tmp_path.rglob("*.[nl][bc][ics]"))
