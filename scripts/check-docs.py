#!/usr/bin/env python3
"""The documentation's own checks, called by scripts/check-docs.

  check-docs.py links FILE.md …
      Every relative link and image in the files points at a file that exists, and every
      `#anchor` at a heading of the target (GitHub's slugs: lowercase, punctuation dropped,
      spaces to hyphens, -1, -2 … for repeats). External http(s) and mailto links are listed,
      not fetched (the test machines have no internet).

  check-docs.py rules RULES.yml src/metrics.rs [METRICS_EXPOSITION]
      The Prometheus rules file parses (PyYAML), has the shape Prometheus loads (groups of
      rules, each an alert or a record with an expr), and every series an expr reads is one
      src/metrics.rs registers, with the suffix its type gives it (_total, _bucket, …) and
      only the labels it has, or one of Prometheus' own (`up`). With METRICS_EXPOSITION (what
      /metrics answered), every family listed there must be one this script read from
      src/metrics.rs, so the reading cannot silently fall behind the code.

Python 3 standard library, and PyYAML for `rules`.
"""

import os
import re
import sys
from urllib.parse import unquote

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title") and ![alt](target); the text may hold `code` and nested ![img](…).
INLINE = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[([^\]]+)\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ATTR = re.compile(r"<(a|img)\b[^>]*?\b(href|src)=\"([^\"]*)\"", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)=\"([^\"]+)\"", re.I)
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def slug(text):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)          # images
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)      # links → their text
    text = re.sub(r"<[^>]+>", "", text)                         # HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def lines_outside_code(path):
    """(line number, line) for every line outside fenced code blocks."""
    with open(path, encoding="utf-8") as f:
        fenced = None
        for number, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                if fenced is None:
                    fenced = m.group(1)
                elif m.group(1) == fenced:
                    fenced = None
                continue
            if fenced is None:
                yield number, line.rstrip("\n")


_anchors = {}


def anchors(path):
    """The anchors a Markdown file offers: its headings' slugs and HTML ids."""
    if path not in _anchors:
        seen = {}
        found = set()
        for _, line in lines_outside_code(path):
            m = HEADING.match(line)
            if m:
                base = slug(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            for anchor in HTML_ANCHOR.findall(line):
                found.add(anchor)
        _anchors[path] = found
    return _anchors[path]


def check_links(files, root):
    errors, external = [], set()
    for path in files:
        here = os.path.dirname(path)
        for number, line in lines_outside_code(path):
            bare = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
            targets = []
            for bang, _text, target in INLINE.findall(bare):
                targets.append(("image" if bang else "link", target))
            # A linked image, [![alt](img)](target): the inner image is found by a second pass.
            for inner in re.findall(r"\[(!\[[^\]]*\]\([^)]*\))\]", bare):
                for bang, _text, target in INLINE.findall(inner):
                    targets.append(("image", target))
            m = REFDEF.match(bare)
            if m:
                targets.append(("link", m.group(2)))
            for tag, _attr, target in HTML_ATTR.findall(bare):
                targets.append(("image" if tag.lower() == "img" else "link", target))
            for target in AUTOLINK.findall(bare):
                targets.append(("link", target))
            for kind, target in targets:
                where = f"{path}:{number}"
                if re.match(r"^(https?:|mailto:)", target, re.I):
                    external.add(target)
                    continue
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    errors.append(f"{where}: {kind} with an unexpected scheme: {target}")
                    continue
                file_part, _, anchor = target.partition("#")
                file_part = unquote(file_part)
                if not file_part:
                    resolved = path
                elif file_part.startswith("/"):
                    resolved = os.path.normpath(os.path.join(root, file_part.lstrip("/")))
                else:
                    resolved = os.path.normpath(os.path.join(here, file_part))
                if not os.path.exists(resolved):
                    errors.append(f"{where}: {kind} to a file that does not exist: {target}")
                    continue
                if kind == "image" and not os.path.isfile(resolved):
                    errors.append(f"{where}: image is not a file: {target}")
                    continue
                if anchor:
                    if not resolved.endswith(".md") or not os.path.isfile(resolved):
                        errors.append(f"{where}: anchor on a file that is not Markdown: {target}")
                    elif unquote(anchor) not in anchors(resolved):
                        errors.append(f"{where}: no heading for #{anchor} in {os.path.relpath(resolved, root)}")
    return errors, external


# ---- Prometheus rules ---------------------------------------------------------------------

# PromQL's words that are not series: aggregations, functions, keywords.
PROMQL_WORDS = set("""
sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
by without on ignoring group_left group_right bool offset and or unless atan2
abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction
histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
double_exponential_smoothing hour idelta increase irate label_join label_replace ln log2 log10
minute month predict_linear rate resets round scalar sgn sort sort_desc sort_by_label
sort_by_label_desc sqrt time timestamp vector year avg_over_time min_over_time max_over_time
sum_over_time count_over_time quantile_over_time stddev_over_time stdvar_over_time
last_over_time present_over_time mad_over_time inf nan
""".split())

# Series Prometheus itself records for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}


def metrics_from_source(path):
    """{exposed series name: allowed labels} read from src/metrics.rs's registrations."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', src)
    if not prefix:
        raise SystemExit(f"{path}: no Registry::with_prefix(\"…\")")
    prefix = prefix.group(1)
    structs = {}
    for name, body in re.findall(r"pub struct (\w+)\s*\{(.*?)\n\}", src, re.S):
        structs[name] = set(re.findall(r"pub (\w+):", body))
    kinds = {}
    for var, ctor in re.findall(r"let (\w+) = (Family::<[^>]*>|Counter::<[^>]*>|Counter|Gauge|Histogram)(?=::|\()", src):
        m = re.match(r"Family::<\s*(\w+)\s*,\s*(\w+)", ctor)
        if m:
            kinds[var] = (m.group(2), structs.get(m.group(1)))
            if kinds[var][1] is None:
                raise SystemExit(f"{path}: no label struct {m.group(1)}")
        else:
            kinds[var] = (re.match(r"\w+", ctor).group(0), set())
    series = {}
    for name, var in re.findall(r'register\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*(\w+)\.clone\(\)', src):
        if var not in kinds:
            raise SystemExit(f"{path}: cannot tell the type of {var} (metric {name})")
        kind, labels = kinds[var]
        family = f"{prefix}_{name}"
        if kind == "Counter":
            series[f"{family}_total"] = (family, labels)
        elif kind == "Gauge":
            series[family] = (family, labels)
        elif kind == "Histogram":
            series[f"{family}_bucket"] = (family, labels | {"le"})
            series[f"{family}_sum"] = (family, labels)
            series[f"{family}_count"] = (family, labels)
        else:
            raise SystemExit(f"{path}: unknown metric type {kind} for {name}")
    if not series:
        raise SystemExit(f"{path}: found no registered metric")
    return series


def selectors(expr):
    """(name, set of label names) for every series selector in a PromQL expression."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)    # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                   # ranges, subqueries
    # Grouping clauses name labels, not series.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    found = []
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2)
        if not name and not matchers:
            continue
        rest = expr[m.end():].lstrip()
        if name and not matchers and rest.startswith("("):
            continue                                                        # a function
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def check_rules(rules_path, metrics_rs, exposition=None):
    import yaml  # PyYAML: Debian's python3-yaml, or the venv scripts/check-docs makes

    errors = []
    series = metrics_from_source(metrics_rs)
    families = {family for family, _ in series.values()}
    if exposition:
        with open(exposition, encoding="utf-8") as f:
            listed = set(re.findall(r"^# TYPE (\S+) ", f.read(), re.M))
        for family in sorted(listed - families):
            errors.append(f"/metrics lists {family}, which {metrics_rs} was not read to register: fix scripts/check-docs.py")
    try:
        with open(rules_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        return errors + [f"{rules_path}: not valid YAML: {e}"], 0
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return errors + [f"{rules_path}: expected a mapping with a non-empty list `groups`"], 0
    count = 0
    for g, group in enumerate(doc["groups"]):
        where = f"{rules_path}: groups[{g}]"
        if not isinstance(group, dict) or not group.get("name") or not isinstance(group.get("rules"), list):
            errors.append(f"{where}: each group needs a name and a list of rules")
            continue
        for r, rule in enumerate(group["rules"]):
            at = f"{where} ({group['name']}) rules[{r}]"
            if not isinstance(rule, dict) or not isinstance(rule.get("expr"), str):
                errors.append(f"{at}: each rule needs an expr")
                continue
            if ("alert" in rule) == ("record" in rule):
                errors.append(f"{at}: a rule is either an alert or a record")
            if "alert" in rule:
                at = f"{at} {rule['alert']}"
                if not isinstance(rule.get("annotations"), dict) or "summary" not in rule["annotations"]:
                    errors.append(f"{at}: an alert needs annotations.summary")
                if "for" in rule and not re.fullmatch(r"(\d+[smhdwy])+", str(rule["for"])):
                    errors.append(f"{at}: `for` is not a duration: {rule['for']}")
            for name, labels in selectors(rule["expr"]):
                if not name:
                    errors.append(f"{at}: a selector without a metric name")
                    continue
                if name in PROMQL_WORDS:
                    continue
                if name in PROMETHEUS_SERIES:
                    continue
                if name not in series:
                    errors.append(f"{at}: {name} is not a series Herald exports (src/metrics.rs)")
                    continue
                extra = labels - series[name][1] - TARGET_LABELS
                if extra:
                    errors.append(f"{at}: {name} has no label {', '.join(sorted(extra))}")
            count += 1
    return errors, count


def main(argv):
    if len(argv) >= 3 and argv[1] == "links":
        root = os.getcwd()
        errors, external = check_links(argv[2:], root)
        for target in sorted(external):
            print(f"  external, not fetched: {target}")
        for e in errors:
            print(f"ERROR {e}", file=sys.stderr)
        print(f"links: {len(argv) - 2} files, {len(external)} external links listed, {len(errors)} errors")
        return 1 if errors else 0
    if len(argv) in (4, 5) and argv[1] == "rules":
        errors, count = check_rules(argv[2], argv[3], argv[4] if len(argv) == 5 else None)
        for e in errors:
            print(f"ERROR {e}", file=sys.stderr)
        print(f"rules: {count} rules in {argv[2]}, every series in src/metrics.rs, {len(errors)} errors")
        return 1 if errors else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
