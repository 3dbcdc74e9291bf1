"""permenrich.report / ``permenrich report OUT`` / ``--report``: one self-contained HTML
page whose tables, figures and in-page links are all there and valid."""

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

import permenrich
from permenrich.cli import main
from test_cli import _write_gct  # one GCT writer for the command-line tests

pytest.importorskip("matplotlib")


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(200)]
    samples = [f"S{i}" for i in range(12)]
    values = rng.normal(8, 1, size=(200, 12))
    values[:20, :6] += 1.5
    _write_gct(tmp_path / "expr.gct", values, genes, samples)
    (tmp_path / "pheno.cls").write_text("12 2 1\n# tumour normal\n" + " ".join(["tumour"] * 6 + ["normal"] * 6) + "\n")
    (tmp_path / "sets.gmt").write_text("".join(
        f"SET{k}\tdesc\t" + "\t".join(genes[10 * k:10 * k + 20]) + "\n" for k in range(5)))
    return tmp_path


class _Page(HTMLParser):
    """What the checks need: tables (rows of the body), images, links and ids."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self.ids, self.text = {}, [], [], set(), []
        self._table, self._in_body = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self._table = attrs.get("id") or f"table-{len(self.tables)}"
            self.tables.setdefault(self._table, 0)
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table] += 1
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _check_page(path, *, top_rows, n_images, run):
    assert path.name == "report.html" and path.is_file()
    page = _parse(path)
    assert page.tables["top-results"] == top_rows
    assert len(page.images) == n_images
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix) and len(src) > len(prefix)
        width, height = _png_size(base64.b64decode(src[len(prefix):], validate=True))
        assert width > 0 and height > 0
    for href in page.links:
        assert href.startswith("#"), f"link leaves the page: {href}"
        assert href[1:] in page.ids, f"in-page link target missing: {href}"
    text = " ".join(page.text)
    assert f"permenrich {run['command']} report" in text
    assert str(run["parameters"]["seed"]) in text and str(run["parameters"]["permutations"]) in text
    for key in ("timings", "backend", "versions"):
        if key in run:
            first = next(iter(run[key]))
            assert first in text
    html_text = path.read_text(encoding="utf-8")
    assert "http://" not in html_text and "https://" not in html_text and "<script" not in html_text
    return page


def test_gsea_report_from_the_api_has_tables_figures_and_anchors(study):
    table = permenrich.gsea(study / "expr.gct", study / "pheno.cls", study / "sets.gmt", min_size=5,
                            permutations=300, seed=3, device="cpu")
    out = study / "out"
    permenrich.write_results(table, out)
    path = permenrich.report(out, result=table)
    run = json.loads((out / "run.json").read_text())
    page = _check_page(path, top_rows=len(table), n_images=1 + len(table), run=run)
    # every set name links to its enrichment plot
    assert {f"#{anchor}" for anchor in page.ids if anchor.startswith("set-")} <= set(page.links)
    assert sum(link.startswith("#set-") for link in page.links) == len(table)
    assert "1/(300+1)" in " ".join(page.text)  # the p-value floor of random permutations


def test_report_from_the_folder_alone_draws_enrichment_plots_while_the_gene_sets_are_unchanged(study):
    table = permenrich.gsea(study / "expr.gct", study / "pheno.cls", study / "sets.gmt", min_size=5,
                            permutations=200, device="cpu")
    out = study / "out"
    permenrich.write_results(table, out)
    run = json.loads((out / "run.json").read_text())
    # ranking.tsv + the GMT named (and checksummed) in run.json: the same figures as with the result
    from_folder = (out / "report.html", permenrich.report(out).read_bytes())
    with_result = permenrich.report(out, result=table).read_bytes()
    assert from_folder[1] == with_result
    # the ranked list read back is the run's to the bit (pandas' default parser was an ulp
    # off in about half of the values, which moved anti-aliased pixels of the plots)
    from permenrich.report import _folder_ranking

    import numpy as np

    assert np.array_equal(_folder_ranking(out, run)[0].statistic.view(np.int64),
                          table.attrs["ranking"].statistic.view(np.int64))
    page = _check_page(from_folder[0], top_rows=len(table), n_images=1 + len(table), run=run)
    assert sum(link.startswith("#set-") for link in page.links) == len(table)
    # the gene sets changed since the run: their members are unknown, so no enrichment plot
    (study / "sets.gmt").write_text((study / "sets.gmt").read_text() + "EXTRA\tna\tG1\tG2\tG3\tG4\tG5\n")
    page = _check_page(permenrich.report(out), top_rows=len(table), n_images=1, run=run)
    assert "Enrichment plots left out" in " ".join(page.text) and "changed since the run" in " ".join(page.text)
    assert not any(link.startswith("#set-") for link in page.links)
    # a report belongs to the output: a new run on the folder replaces it as a whole
    permenrich.write_results(table, out)
    assert sorted(p.name for p in out.iterdir()) == ["ranking.tsv", "results.tsv", "run.json"]


def test_cli_report_flag_on_gsea_and_genes_and_the_report_command(study, capsys):
    gsea_out, genes_out = study / "g", study / "n"
    assert main(["gsea", "--expr", str(study / "expr.gct"), "--cls", str(study / "pheno.cls"), "--gene-sets",
                 str(study / "sets.gmt"), "--min-size", "5", "--permutations", "200", "--device", "cpu",
                 "--out", str(gsea_out), "--quiet", "--report"]) == 0
    assert main(["genes", "--expr", str(study / "expr.gct"), "--cls", str(study / "pheno.cls"),
                 "--permutations", "200", "--device", "cpu", "--out", str(genes_out), "--quiet", "--report"]) == 0
    captured = capsys.readouterr()
    assert "report.html" in captured.out, captured.err
    gsea_run = json.loads((gsea_out / "run.json").read_text())
    _check_page(gsea_out / "report.html", top_rows=5, n_images=6, run=gsea_run)
    genes_run = json.loads((genes_out / "run.json").read_text())
    _check_page(genes_out / "report.html", top_rows=20, n_images=1, run=genes_run)
    # the subcommand rewrites it from the folder (ranking.tsv and the unchanged GMT: same figures)
    (gsea_out / "report.html").unlink()
    assert main(["report", str(gsea_out)]) == 0
    assert f"wrote {gsea_out / 'report.html'}" in capsys.readouterr().out
    _check_page(gsea_out / "report.html", top_rows=5, n_images=6, run=gsea_run)


@pytest.mark.parametrize("setup, expected", [
    ("missing", "does not exist"),
    ("empty", "run.json' is missing"),
    ("bad_json", "cannot read"),
    ("cohort_demo", "cohort demo's two analyses"),  # run.json as demo --cohort writes it
    # a table cut after its first columns: the report was written, empty, without a word
    ("cut_table", "holds the columns gene_set, size, size_original, not those of a permenrich table"),
])
def test_report_errors_are_one_line(tmp_path, capsys, setup, expected):
    folder = tmp_path / "out"
    if setup != "missing":
        folder.mkdir()
    if setup == "bad_json":
        (folder / "run.json").write_text("{not json")
    if setup == "cohort_demo":
        (folder / "run.json").write_text(json.dumps({"demo": {"simulated": True}, "analyses": {"unadjusted": {},
                                                                                                "adjusted": {}}}))
        (folder / "results.tsv").write_text("analysis\tgene_set\n")
    if setup == "cut_table":
        (folder / "run.json").write_text(json.dumps({"command": "gsea", "output": {"written_by": "permenrich"}}))
        (folder / "results.tsv").write_text("gene_set\tsize\tsize_original\nSET_UP\t8\t8\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("permenrich: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "report.html").exists()


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_a_headless_browser(study, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    table = permenrich.gsea(study / "expr.gct", study / "pheno.cls", study / "sets.gmt", min_size=5,
                            permutations=200, device="cpu")
    out = study / "out"
    permenrich.write_results(table, out)
    report = permenrich.report(out, result=table)
    # The report itself has no script; a copy with one records every image's rendered size
    # into the DOM once loaded, which --dump-dom prints.
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',function(){var out=[];"
              "document.querySelectorAll('img').forEach(function(i){out.push(i.naturalWidth+'x'+i.naturalHeight+"
              "'x'+i.getBoundingClientRect().width)});var p=document.createElement('pre');p.id='probe';"
              "p.textContent='SIZES:'+out.join(',')+':END';document.body.appendChild(p);});</script>")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                           "--v=1", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # The script's own text holds 'SIZES:' too: read the element it added.
    found = re.search(r'<pre id="probe">SIZES:(.*?):END</pre>', done.stdout)
    assert found, "the page did not finish loading"
    sizes = found.group(1).split(",")
    assert len(sizes) == 1 + len(table)
    for size in sizes:
        natural_width, natural_height, shown_width = (float(v) for v in size.split("x"))
        assert natural_width > 0 and natural_height > 0 and shown_width > 0
    # Chromium logs every console message as INFO:CONSOLE without its level; the report has
    # no script and the probe logs nothing, so any console line is a problem.
    console_lines = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console_lines, console_lines


def test_a_report_of_several_contrasts_draws_each_contrast_and_states_the_floor(study):
    """A run of several contrasts gets a dot plot per contrast (enrichment plots are each
    contrast's own: named, not drawn), and the p-value floor of its permutations (it
    said 'not a permutation test')."""
    import pandas as pd

    sheet = pd.DataFrame({"tissue": ["tumour"] * 6 + ["normal"] * 6, "batch": ["a", "b"] * 6},
                         index=[f"S{i}" for i in range(12)])
    contrasts = pd.DataFrame({"name": ["tumour_vs_normal", "a_vs_b"], "groupby": ["tissue", "batch"],
                              "case": ["tumour", "a"], "control": ["normal", "b"]})
    table = permenrich.contrasts(study / "expr.gct", contrasts, study / "sets.gmt", phenotype=sheet, min_size=5,
                                 permutations=200, seed=1, device="cpu")
    out = study / "out"
    permenrich.write_results(table, out)
    page = _parse(permenrich.report(out))
    text = " ".join(page.text)
    assert len(page.images) == 2
    assert "contrast tumour_vs_normal: Top gene sets by NES" in text and "contrast a_vs_b: Top gene sets" in text
    assert ("about 0.00995 (2 x 1/(200+1): a set's p counts only the null scores of its sign); random permutations, "
            "in every contrast") in text
    assert "not a permutation test" not in text


def test_top_rows_take_each_contrast_and_long_names_keep_their_ends_and_nan_says_na():
    """One contrast's ties at the p-value floor filled the top table; names over 300
    characters that differ at the end were cut to the same text; NaN was an empty cell."""
    import pandas as pd

    from permenrich.report import _results_section, _top_rows

    table = pd.DataFrame({"contrast": ["a"] * 30 + ["b"] * 30 + ["c"] * 30, "gene": [f"g{i}" for i in range(90)],
                          "statistic": 1.0, "pval": 0.001, "qval_bh": 0.01, "pval_maxt": 0.05})
    rows, columns = _top_rows("genes", table)
    assert columns[0] == "contrast" and rows.contrast.value_counts().to_dict() == {"a": 7, "b": 7, "c": 7}
    assert list(dict.fromkeys(rows.contrast)) == ["a", "b", "c"]
    long = "X" * 320
    sets = pd.DataFrame({"gene_set": [long + "_END_ONE", long + "_END_TWO"], "size": [10, 12], "es": [0.5, 0.4],
                         "nes": [1.5, 1.2], "pval": [0.01, float("nan")], "fdr": [0.02, float("nan")]})
    page = _results_section("gene_sets", sets, {})
    assert "_END_ONE</td>" in page and "_END_TWO</td>" in page and f'title="{long}_END_ONE"' in page
    assert '<td class="num">NA</td>' in page



def test_report_states_each_sets_floor_and_the_ora_classes(tmp_path):
    """A ranked list whose random sets mostly score positive leaves the negative sets few
    null scores of their sign: their p cannot fall below 1/(n_null_same_sign + 1), far above
    the run's 2/(permutations + 1), which the report alone stated (a set at p = 1/38 read
    as weak evidence). The report now gives each set's floor and how many sit at it. ORA's
    design read 'case (n = 24) vs control': its classes are in its design record."""
    import pandas as pd

    rng = np.random.default_rng(1)
    genes = [f"G{i}" for i in range(400)]
    scores = pd.Series(np.abs(rng.normal(size=400)) + 0.05, index=genes).sort_values(ascending=False)
    scores.iloc[-8:] = -np.linspace(3, 4, 8)  # a handful of strongly negative genes
    sets = {"NEG": list(scores.index[-8:]), **{f"R{k}": list(rng.choice(genes, 20, replace=False))
                                               for k in range(4)}}
    table = permenrich.prerank(scores, sets, permutations=300, min_size=8, seed=1)
    negative = table.set_index("gene_set").loc["NEG"]
    assert negative.pval == pytest.approx(1 / (negative.n_null_same_sign + 1)) and negative.n_null_same_sign < 100
    permenrich.write_results(table, tmp_path / "pre")
    text = " ".join(permenrich.report(tmp_path / "pre").read_text().split())
    assert "smallest attainable p-value of each set" in text
    assert re.search(r"[1-9]\d* sets? sit at their floor", text) and "--p-method multilevel" in text
    expr = pd.DataFrame(rng.normal(size=(60, 12)), index=[f"G{i}" for i in range(60)])
    expr.iloc[:10, :6] += 2
    ora = permenrich.ora(None, {"A": [f"G{i}" for i in range(12)], "B": [f"G{i}" for i in range(20, 35)]},
                         expr=expr, phenotype=["t"] * 6 + ["n"] * 6, case="t", control="n", top=10,
                         permutations=50, min_size=5)
    permenrich.write_results(ora, tmp_path / "ora")
    text = " ".join(permenrich.report(tmp_path / "ora").read_text().split())
    assert "t (n = 6) vs n (n = 6)" in text
