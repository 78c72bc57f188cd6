#!/usr/bin/env python3
"""Checks deploy/grafana: dashboards are provisioning-ready and every query is valid PromQL.

  check_dashboards.py [--promtool PATH]   check; exit 1 on any problem
  check_dashboards.py --list               print every query as a JSON line:
      {"dashboard": uid, "panel": title, "refId": "A", "expr": raw, "query": with variables set}

Checks: each dashboards/*.json parses, has a unique uid, a title, schemaVersion >= 36, a
`datasource` variable of type datasource, no datasource ids or ${DS_*} inputs baked in; every
panel queries through ${datasource}; every target has a non-empty `expr`; panel ids are unique.
The PromQL of every target, and of every entry of expected_empty.yml, is parsed by
`promtool check rules` (each becomes a recording rule in a temporary file, Grafana variables
replaced as in VARIABLES). expected_empty.yml entries must have a reason and name a dashboard
panel (and be one of its queries), an alert of deploy/prometheus/rules (and be its expression),
or just a name.
Needs only the Python standard library, plus PyYAML (python3-yaml) for expected_empty.yml,
which is skipped with a notice without it.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# What a live check (and the PromQL parse) puts in place of Grafana's variables.
VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "job": ".+",
    "grpc_type": ".+",
}


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in VARIABLES:
            raise KeyError(name)
        return VARIABLES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def load_dashboards(errors):
    dashboards = {}
    for path in sorted(glob.glob(os.path.join(HERE, "dashboards", "*.json"))):
        name = os.path.relpath(path, HERE)
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:
            errors.append(f"{name}: not JSON: {e}")
            continue
        uid = d.get("uid")
        if not uid:
            errors.append(f"{name}: no uid")
            continue
        if uid in dashboards:
            errors.append(f"{name}: uid {uid!r} also used by {dashboards[uid][0]}")
            uid = name  # still check its panels
        if not d.get("title"):
            errors.append(f"{name}: no title")
        if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
            errors.append(f"{name}: schemaVersion {d.get('schemaVersion')!r}, want >= 36")
        if d.get("id") not in (None,):
            errors.append(f"{name}: a numeric dashboard id is baked in; use null")
        if "__inputs" in d or "${DS_" in json.dumps(d):
            errors.append(f"{name}: ${{DS_*}} import inputs do not work with file provisioning")
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            errors.append(f"{name}: no `datasource` variable of type datasource (query prometheus)")
        dashboards[uid] = (name, d)
    if not dashboards:
        errors.append("no dashboards under dashboards/")
    return dashboards


def panels_of(d):
    for p in d.get("panels", []):
        yield p
        for sub in p.get("panels", []) or []:
            yield sub


def check_panels(dashboards, errors):
    queries = []
    for uid, (name, d) in dashboards.items():
        ids = set()
        titles = set()
        for p in panels_of(d):
            where = f"{name}: panel {p.get('title')!r}"
            if p.get("id") in ids:
                errors.append(f"{where}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            if "gridPos" not in p:
                errors.append(f"{where}: no gridPos")
            if p.get("type") == "row":
                continue
            if p.get("title") in titles:
                errors.append(f"{where}: duplicate panel title")
            titles.add(p.get("title"))
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                errors.append(f"{where}: datasource is not ${{datasource}}: {p.get('datasource')!r}")
            targets = p.get("targets") or []
            if not targets:
                errors.append(f"{where}: no targets")
            for t in targets:
                expr = (t.get("expr") or "").strip()
                if not expr:
                    errors.append(f"{where}: target {t.get('refId')} has no expr")
                    continue
                if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                    errors.append(f"{where}: target {t.get('refId')} has its own datasource")
                try:
                    query = substitute(expr)
                except KeyError as e:
                    errors.append(f"{where}: unknown variable ${e.args[0]} in {expr!r}")
                    continue
                queries.append({"dashboard": uid, "panel": p.get("title"),
                                "refId": t.get("refId"), "expr": expr, "query": query})
    return queries


def normalize(expr):
    return " ".join(expr.split())


def load_alert_exprs():
    import yaml
    exprs = {}
    for path in glob.glob(os.path.join(HERE, "..", "prometheus", "rules", "*.yml")):
        with open(path) as f:
            for group in (yaml.safe_load(f) or {}).get("groups", []):
                for rule in group.get("rules", []):
                    if "alert" in rule:
                        exprs[rule["alert"]] = rule["expr"]
    return exprs


def check_expected_empty(dashboards, errors):
    path = os.path.join(HERE, "expected_empty.yml")
    if not os.path.exists(path):
        errors.append("expected_empty.yml is missing")
        return []
    try:
        import yaml  # PyYAML (python3-yaml)
    except ImportError:
        print("check_dashboards: PyYAML missing, expected_empty.yml not checked", file=sys.stderr)
        return []
    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            errors.append(f"expected_empty.yml: not YAML: {e}")
            return []
    variables = {k: str(v) for k, v in (doc.get("variables") or {}).items()}
    if variables != VARIABLES:
        errors.append(f"expected_empty.yml: variables {variables} differ from "
                      f"check_dashboards.py's {VARIABLES}")
    if not doc.get("expressions"):
        errors.append("expected_empty.yml: no `expressions`")
    alerts = load_alert_exprs()
    queries = []
    for section in ("expressions",):
        for n, e in enumerate(doc.get(section) or []):
            where = f"expected_empty.yml: {section}[{n}]"
            expr = (e.get("expr") or "").strip()
            if not expr:
                errors.append(f"{where}: no expr")
                continue
            if not e.get("reason"):
                errors.append(f"{where}: no reason")
            kinds = [k for k in ("dashboard", "alert", "name") if k in e]
            if len(kinds) != 1:
                errors.append(f"{where}: give exactly one of dashboard (with panel), alert, name")
            uid = e.get("dashboard")
            label = e.get("name") or e.get("alert") or f"{uid} / {e.get('panel')}"
            if uid is not None:
                if uid not in dashboards:
                    errors.append(f"{where}: no dashboard {uid!r}")
                else:
                    panels = [p for p in panels_of(dashboards[uid][1])
                              if p.get("title") == e.get("panel")]
                    if not panels:
                        errors.append(f"{where}: dashboard {uid} has no panel {e.get('panel')!r}")
                    elif normalize(expr) not in {normalize(t.get("expr") or "")
                                                 for p in panels for t in p.get("targets") or []}:
                        errors.append(f"{where}: expr is not a query of panel {e.get('panel')!r}")
            if "alert" in e:
                if e["alert"] not in alerts:
                    errors.append(f"{where}: no alert {e['alert']!r} in deploy/prometheus/rules")
                elif normalize(alerts[e["alert"]]) != normalize(expr):
                    errors.append(f"{where}: expr differs from alert {e['alert']}'s expression")
            try:
                queries.append({"dashboard": uid, "panel": label, "refId": f"{section}[{n}]",
                                "expr": expr, "query": substitute(expr)})
            except KeyError as k:
                errors.append(f"{where}: unknown variable ${k.args[0]}")
    return queries


def parse_with_promtool(promtool, queries, errors):
    rules = [{"record": f"elfdeploy_check:q{i}", "expr": q["query"]} for i, q in enumerate(queries)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump({"groups": [{"name": "dashboard_queries", "rules": rules}]}, f)  # JSON is YAML
        tmp = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", tmp], capture_output=True, text=True)
    finally:
        os.unlink(tmp)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        for m in re.finditer(r"group \"dashboard_queries\", rule (\d+), \"[^\"]*\": (.*)", out):
            q = queries[int(m.group(1)) - 1]
            errors.append(f"{q['dashboard']} / {q['panel']} / {q['refId']}: invalid PromQL: "
                          f"{m.group(2)}\n    {q['query']}")
        if not any("invalid PromQL" in e for e in errors):
            errors.append(f"promtool check rules failed:\n{out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promtool", default=os.environ.get("PROMTOOL", "promtool"))
    ap.add_argument("--list", action="store_true", help="print every query as a JSON line")
    args = ap.parse_args()

    errors = []
    dashboards = load_dashboards(errors)
    queries = check_panels(dashboards, errors)
    if args.list:
        for q in queries:
            print(json.dumps(q))
        return 0 if not errors else 1
    expected = check_expected_empty(dashboards, errors)
    parse_with_promtool(args.promtool, queries + expected, errors)
    for e in errors:
        print(f"FAILED: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"dashboards: {len(dashboards)} ok, {len(queries)} queries and "
          f"{len(expected)} expected-empty expressions parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
